"""How every command ends: one line on stderr for a user's mistake, exit status that tells the truth.

Used by every command's ``__main__`` (Beam jobs, ``run_all``, trainer, partitions)::

    if __name__ == "__main__":
        from schemas.cli import main

        main("pipelines.bucket_cells")          # imports the module by name and calls its run(argv)

Importing the module by its name (instead of calling ``run`` of ``__main__``) means every class the job
pickles (DoFns, combiners, ``CellPartial`` ...) is ``pipelines.bucket_cells.X``, not ``__main__.X``, so jobs run
as ``python -m ...`` on multi-process, portable and remote runners.

Exit status: 0 success; 2 usage (unknown or misspelt flag -- with the nearest valid one --, bad flag value:
argparse's own status, and ``UsageError``); 1 data (missing or empty file, missing column, wrong embedding size,
mismatched or edited artifacts, a job whose accounting failed, any other error). The message is one line naming
the file or flag; ``--debug`` (anywhere on the command line) adds the traceback. This module imports nothing
heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

USAGE, DATA = 2, 1
# Errors raised inside a pipeline reach the launcher wrapped in the runner's own error text; the line that
# carries this tag is the one the user needs.
JOB_CHECK_TAG = "[job check failed]"


class UsageError(Exception):
    """The command was called wrongly (a flag, a config key, a changed config on an existing workdir): exit 2."""


def nearest_flag(flag: str, *candidate_lists: Sequence[str]) -> str:
    """'; did you mean --x?' for the closest declared flag ('-' and '_' treated alike), or ''."""
    candidates = [c for lst in candidate_lists for c in lst]
    norm = flag.replace("-", "_").lstrip("_")
    by_norm = {c.replace("-", "_").lstrip("_"): c for c in candidates}
    if norm in by_norm:
        return f"; did you mean {by_norm[norm]}?"
    close = difflib.get_close_matches(norm, list(by_norm), n=1, cutoff=0.6)
    return f"; did you mean {by_norm[close[0]]}?" if close else ""


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose unknown-flag error names the nearest valid flag (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _own_flags(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]

    def error(self, message: str):
        match = re.match(r"unrecognized arguments: (\S+)", message)
        missing = re.match(r"the following arguments are required: (.+)", message)
        if match:
            flag = match.group(1).split("=", 1)[0]
            message = f"unrecognized argument {flag}{nearest_flag(flag, self._own_flags())}"
        elif missing:
            # argparse checks required flags before unknown ones, so "--photo x" would only say "--photos is
            # required": name the misspelt flag instead when one given is close to a missing one.
            required = [m.strip() for m in missing.group(1).split(",") if m.strip().startswith("--")]
            own = set(self._own_flags())
            for token in self._given:
                flag = token.split("=", 1)[0]
                if not flag.startswith("--") or flag == "--" or flag in own:
                    continue
                hint = nearest_flag(flag, required)
                if hint:
                    message = f"unrecognized argument {flag}{hint} (required: {missing.group(1)})"
                    break
        # One line (argparse would print the whole usage block first).
        self.exit(USAGE, f"{self.prog}: {message} (see --help)\n")


def one_line(error: BaseException) -> str:
    """The message a user reads: the tagged job-check line if any, else the error's first line with its type
    when the message alone would not say what happened."""
    text = str(error)
    for line in text.splitlines():
        if JOB_CHECK_TAG in line:
            line = line[line.index(JOB_CHECK_TAG) + len(JOB_CHECK_TAG) :].strip()
            return re.sub(r"\s*\[while running '[^']*'\]$", "", line)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in first:
        first = f"{error.filename}: {error.strerror or 'no such file'}"
    elif isinstance(error, FileNotFoundError) and len(lines) == 1 and " " not in first:
        first = f"{first}: no such file or directory"  # raised as FileNotFoundError(path): the path alone
    if isinstance(error, KeyError):
        first = f"missing key {first}"
    elif not first or not _project_error(error) and not isinstance(error, (FileNotFoundError, ValueError)):
        first = f"{type(error).__name__}: {first}"
    return first


def exit_status(error: BaseException) -> int:
    return USAGE if isinstance(error, UsageError) else DATA


def run_command(run: Callable[[Sequence[str]], object], argv: Sequence[str] | None = None, prog: str = "") -> int:
    """Call ``run(argv)``; map errors to one stderr line and an exit status. Returns the status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CPLANET_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        run(argv)
    except SystemExit as stop:  # argparse (2 for usage) or an explicit exit
        code = stop.code
        if isinstance(code, str):
            print(f"{prog or 'error'}: {code}", file=sys.stderr)
            return DATA
        return int(code or 0)
    except KeyboardInterrupt:
        print(f"{prog or 'error'}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the point of this wrapper
        if debug:
            import traceback

            traceback.print_exc()
        status = exit_status(error)
        hint = "" if debug else " (add --debug for the traceback)" if status == DATA and _unexpected(error) else ""
        print(f"{prog or 'error'}: {one_line(error)}{hint}", file=sys.stderr)
        return status
    return 0


def _project_error(error: BaseException) -> bool:
    return (type(error).__module__ or "").startswith(("schemas", "pipelines", "partition_gen", "trainer", "imagery"))


def _unexpected(error: BaseException) -> bool:
    """Not one of the project's own explained errors (those already say what to do)."""
    return not (_project_error(error) or isinstance(error, (FileNotFoundError, ValueError)))


def main(module: str, function: str = "run", argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m <module>``: import ``module`` by name, run ``function(argv)``, exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = getattr(importlib.import_module(module), function)
    sys.exit(run_command(run, argv, prog=module.rsplit(".", 1)[-1]))
