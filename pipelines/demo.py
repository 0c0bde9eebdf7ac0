"""`make demo`: the whole chain on the bundled sample, with the DirectRunner, in a few minutes.

Builds a sample of training photos at real MP-16 locations with simulated visual features and the real
Im2GPS3k test coordinates (``sampledata``; the feature model is documented there and in the
README), then runs ``pipelines.run_all``: bucket -> geoclass sets -> examples -> train -> partitions ->
batch predict -> evaluate, and prints the accuracy table and where the maps and plots are.

The console shows one screen: the stages as they finish, the accuracy table, and where everything was
written. Every detail (job summaries, training epochs, Beam warnings) goes to ``WORKDIR/demo.log``.

    python -m pipelines.demo [--workdir out/demo] [--n_train 40000] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import time
from collections.abc import Sequence

from schemas.cli import Parser

DEFAULT_WORKDIR = os.path.join("out", "demo")
DEFAULT_N_TRAIN = 40_000
MAX_LISTED = 6  # files per kind in the final listing; more are summarised as "... N more"
STAGE_LOGGER = "cplanet.run_all"


def outputs(workdir: str) -> list[tuple[str, list[str]]]:
    """(label, files) for each kind of result of a demo run under ``workdir``, in reading order."""
    run_dir, sample_dir = os.path.join(workdir, "run"), os.path.join(workdir, "sample")
    kinds = (
        ("accuracy table", os.path.join(run_dir, "evaluation.md")),
        ("accuracy plot", os.path.join(run_dir, "accuracy.png")),
        ("Figure 4 for one photo", os.path.join(run_dir, "figure4_*.png")),
        ("geoclass-set maps", os.path.join(run_dir, "sets", "maps", "*.png")),
        ("training curves", os.path.join(run_dir, "train", "*.png")),
        ("feature model", os.path.join(sample_dir, "*.png")),
        ("full log", os.path.join(workdir, "demo.log")),
    )
    return [(label, sorted(glob.glob(pattern))) for label, pattern in kinds]


def final_lines(report: dict, title: str, workdir: str, seconds: float) -> list[str]:
    """What the demo prints at the end: the accuracy table once, then where everything was written."""
    from partition_gen.evaluation import to_markdown

    lines = ["", *to_markdown(report, title).rstrip("\n").splitlines(), ""]
    root = os.path.abspath(workdir)
    lines.append(f"Finished in {seconds:.0f} s. Written under {root}:")
    for label, files in outputs(workdir):
        if not files:
            continue
        shown = [os.path.relpath(f, root) for f in files[:MAX_LISTED]]
        more = f" ... {len(files) - MAX_LISTED} more" if len(files) > MAX_LISTED else ""
        lines.append(f"  {label}: " + ", ".join(shown) + more)
    return lines


def _console_and_log(log_path: str) -> logging.FileHandler:
    """Everything at INFO into the log file; on the console the stage lines and any warning."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    to_file = logging.FileHandler(log_path, mode="w")
    to_file.setFormatter(fmt)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console.addFilter(lambda r: r.levelno >= logging.WARNING or (r.name == STAGE_LOGGER and "[" in r.getMessage()))
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(console)
    return to_file


def run(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="pipelines.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help=f"where everything goes (default {DEFAULT_WORKDIR})")
    parser.add_argument("--n_train", type=int, default=DEFAULT_N_TRAIN,
                        help=f"simulated training photos (default {DEFAULT_N_TRAIN:,})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of every stage (default 0)")
    import sampledata as sample_data
    from pipelines import run_all

    parser.add_argument("--test_set", default="im2gps3k", choices=sample_data.TEST_SETS,
                        help="test locations (default im2gps3k)")
    args, beam_args = parser.parse_known_args(argv)
    from pipelines.options import check_flags

    # The rest goes to every Beam stage; a flag nobody declares (--n-train) stops here, naming --n_train.
    check_flags(parser, beam_args)
    log_file = _console_and_log(os.path.join(args.workdir, "demo.log"))
    started = time.time()
    title = f"Demo: {args.n_train:,} simulated training photos, {args.test_set} test locations -- accuracies [%]"
    # Job summaries and the evaluation's own table go to the log; the table is printed once, below.
    with open(log_file.baseFilename, "a") as details, contextlib.redirect_stdout(details):
        sample_dir = os.path.join(args.workdir, "sample")
        paths = sample_data.make_sample(sample_dir, n_train=args.n_train, seed=args.seed, test_sets=(args.test_set,))
        report = run_all.run_chain(
            train=paths["train"],
            test=paths[f"test_{args.test_set}"],
            workdir=os.path.join(args.workdir, "run"),
            config=run_all.RunConfig(seed=args.seed),
            beam_args=beam_args,
        )
    print("\n".join(final_lines(report, title, args.workdir, time.time() - started)), flush=True)
    return report


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.demo")
