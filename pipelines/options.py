"""Flags of every Beam job: runner defaults for offline runs, the shared job flags, strict parsing.

- ``offline_pipeline_args`` / ``pipeline_options``: the ``FnApiRunner`` (the engine the DirectRunner itself falls
  back to; ``--runner=DirectRunner`` is mapped to it because Beam >= 2.68's DirectRunner first tries to download
  the Prism binary), one in-process worker by default, two worker processes with ``parallel=True`` or
  ``--direct_num_workers=2 --direct_running_mode=multi_processing``. Any other ``--runner`` (DataflowRunner,
  FlinkRunner, PortableRunner, PrismRunner) is passed through untouched.
- ``add_job_flags(parser)``: the flags every job shares (``--allow_empty``, ``--max_dead_letter_fraction``,
  ``--wait_until_finish``), declared once here.
- ``parse_job_args(parser, argv)``: the job's own flags, then Beam's; a flag neither knows (a typo such as
  ``--run-date``) stops the job with exit status 2 and the nearest valid flag.
- ``job_args(parser, **values)``: the typed way to call a job from Python (``run_all``): the job's declared flags
  with their defaults, overridden by keyword, unknown keywords refused; no argv strings.
- ``path_flag``: argparse ``type`` for path flags: local paths absolute at launch (workers may run elsewhere).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.artifacts import absolute
from schemas.cli import nearest_flag

LOG = logging.getLogger(__name__)

OFFLINE_RUNNER = "FnApiRunner"
_DIRECT_RUNNER_NAMES = {"directrunner", "direct", "switchingdirectrunner"}
DEFAULT_BATCH_ROWS = 65_536
# A nightly input where more than this share of rows is unusable is a broken input, not a normal night.
DEFAULT_MAX_DEAD_LETTER_FRACTION = 0.5


def path_flag(text: str) -> str:
    """A path flag's value: local paths made absolute at launch, URIs (gs://...) unchanged."""
    return absolute(text)


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def add_job_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every Beam job takes (the job's exit status and commit depend on them)."""
    group = parser.add_argument_group("accounting and launch (every job)")
    group.add_argument(
        "--allow_empty", type=_bool, nargs="?", const=True, default=False,
        help="succeed even when the input has no rows (default: fail); --allow_empty or --allow_empty=true",
    )
    group.add_argument(
        "--max_dead_letter_fraction",
        type=float,
        default=DEFAULT_MAX_DEAD_LETTER_FRACTION,
        help="fail (and commit nothing) when dead letters / rows in exceeds this "
        f"(default {DEFAULT_MAX_DEAD_LETTER_FRACTION})",
    )
    group.add_argument(
        "--wait_until_finish",
        type=_bool,
        default=True,
        help="wait for the job and print its summary (default true); false: return after submission, as a "
        "Flex Template launcher does; the job still checks and commits its own output",
    )
    return parser


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def offline_pipeline_args(pipeline_args: Sequence[str] = (), parallel: bool = False) -> list[str]:
    """``pipeline_args`` with the offline runner defaults filled in where the caller set nothing.

    Default: one in-process worker. The hot paths are NumPy/Arrow/TensorFlow calls that use more than one core
    by themselves, batches never leave the process, and on the 2-core reference machine this was the fastest
    mode for ``bucket_cells`` (1M photos: as fast as two threads, 2-3x faster than two processes).
    ``parallel`` asks for two SDK worker processes (``multi_processing``): isolated workers, but every batch
    crosses the gRPC data plane. Two worker *threads* (``multi_threading``) are not used: in repeated
    1M-photo runs they lost combiner partials about one run in four (the Beam 2.77 FnApiRunner; caught by
    ``bucket_cells``' cells-vs-photos cross-check), while one worker and two processes never did.
    """
    args = list(pipeline_args)
    runner = _flag_value(args, "--runner")
    if runner is None or runner.lower() in _DIRECT_RUNNER_NAMES:
        args = [a for i, a in enumerate(args) if not _is_runner_arg(args, i)]
        args.append(f"--runner={OFFLINE_RUNNER}")
        if runner is not None:
            LOG.info("running --runner=%s as %s (same engine, no Prism download)", runner, OFFLINE_RUNNER)
        runner = OFFLINE_RUNNER
    if runner == OFFLINE_RUNNER:
        if not _has_flag(args, "--direct_num_workers"):
            args.append(f"--direct_num_workers={2 if parallel else 1}")
        if not _has_flag(args, "--direct_running_mode"):
            args.append(f"--direct_running_mode={'multi_processing' if parallel else 'in_memory'}")
    return args


def _is_runner_arg(args: Sequence[str], i: int) -> bool:
    a = args[i]
    if a.startswith("--runner="):
        return True
    if a == "--runner":
        return True
    return i > 0 and args[i - 1] == "--runner"


def pipeline_options(pipeline_args: Sequence[str] = (), parallel: bool = False) -> PipelineOptions:
    """``PipelineOptions`` from leftover command-line flags, with the offline defaults."""
    return PipelineOptions(offline_pipeline_args(pipeline_args, parallel=parallel))


def _beam_parser() -> argparse.ArgumentParser:
    """Every pipeline option Beam knows (each ``PipelineOptions`` subclass adds its own)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # an option declared by two classes
    return parser


def unknown_flags(args: Sequence[str]) -> list[str]:
    """The flags of ``args`` that no Beam pipeline option declares."""
    _, unknown = _beam_parser().parse_known_args(list(args))
    return [a for a in unknown if a.startswith("-")]


def check_flags(parser: argparse.ArgumentParser, rest: Sequence[str]) -> None:
    """Exit with status 2 naming the nearest valid flag when ``rest`` holds a flag nobody declares."""
    bad = unknown_flags(rest)
    if not bad:
        return
    flag = bad[0].split("=", 1)[0]
    own = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    beam_flags = [s for a in _beam_parser()._actions for s in a.option_strings if s.startswith("--")]
    parser.error(f"unrecognized argument {flag}{nearest_flag(flag, own, beam_flags)}")


def parse_job_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, parallel: bool = False
) -> tuple[argparse.Namespace, PipelineOptions]:
    """The job's own flags, then ``PipelineOptions`` (runner flags etc.), the same way for every job.

    A flag that neither the job nor Beam declares exits with status 2 and the nearest valid flag.
    """
    if not any(a.dest == "max_dead_letter_fraction" for a in parser._actions):
        add_job_flags(parser)
    known, rest = parser.parse_known_args(argv)
    check_flags(parser, rest)
    return known, pipeline_options(rest, parallel=parallel)


def job_args(parser: argparse.ArgumentParser, **values) -> argparse.Namespace:
    """The job's flags as a Namespace: declared defaults, overridden by ``values`` (names of declared flags).

    For calling a job from Python with typed values: ``bucket_cells.launch(job_args(bucket_cells.parser(),
    features=..., output=...), options)``. A required flag left out or an unknown name raises ``TypeError``.
    """
    if not any(a.dest == "max_dead_letter_fraction" for a in parser._actions):
        add_job_flags(parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise TypeError(f"{parser.prog}: no such options {unknown}; declared: {sorted(actions)}")
    namespace = argparse.Namespace()
    for dest, action in actions.items():
        if dest in values:
            value = values[dest]
            if value is not None and action.type is not None and isinstance(value, str):
                value = action.type(value)
        elif action.required:
            raise TypeError(f"{parser.prog}: option '{dest}' is required")
        else:
            value = action.default
        setattr(namespace, dest, value)
    return namespace


def local_pipeline(extra_args: Sequence[str] = (), parallel: bool = False) -> beam.Pipeline:
    """An offline pipeline for tests and notebooks (in-process unless ``parallel``)."""
    return beam.Pipeline(options=pipeline_options(extra_args, parallel=parallel))

