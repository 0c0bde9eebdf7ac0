"""Progress of a running Beam job: rows read and written so far, logged by the workers themselves.

A runner reports Beam counters to the launcher late (the local runner only when the job ends), so a long
job would say nothing until its summary. Instead, every worker process logs its own running totals per job
and stage, at its first rows and then at most every ``CPLANET_PROGRESS_SECONDS`` seconds (default 15)::

    bucket_cells: read 131,072 rows so far
    bucket_cells: written 65,536 rows so far

On Dataflow these lines appear in the workers' logs; locally, between the launcher's lines. The counters remain
the source of truth for the summary line; these totals are per worker process.
"""

from __future__ import annotations

import logging
import os
import threading
import time

LOG = logging.getLogger("cplanet.progress")
_lock = threading.Lock()
_totals: dict[tuple[str, str], int] = {}
_last: dict[tuple[str, str], float] = {}


def interval_seconds() -> float:
    try:
        return float(os.environ.get("CPLANET_PROGRESS_SECONDS", "15"))
    except ValueError:
        return 15.0


def advance(job: str, stage: str, rows: int, now: float | None = None) -> int:
    """Add ``rows`` to this process's total for (job, stage); log it when due. Returns the new total."""
    key = (job, stage)
    now = time.monotonic() if now is None else now
    with _lock:
        total = _totals.get(key, 0) + int(rows)
        _totals[key] = total
        due = key not in _last or now - _last[key] >= interval_seconds()
        if due:
            _last[key] = now
    if due:
        LOG.info("%s: %s %s rows so far", job, stage, f"{total:,}")
    return total


def reset() -> None:
    """Forget the totals (a new job in the same process, e.g. in run_all or tests)."""
    with _lock:
        _totals.clear()
        _last.clear()
