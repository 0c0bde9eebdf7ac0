"""`make bench`: run every benchmark, each in its own process, then write bench/REPORT.md from results.json.

Each benchmark module has a ``main()`` that records its figures under its own key with
``benchmarks.results.record``. Running them in separate processes keeps peak-memory figures honest (one
benchmark's allocations do not inflate the next one's) and lets one failure not hide the others' figures.

    python -m benchmarks.run_all                 # everything
    python -m benchmarks.run_all s2 combination  # a subset, by short name
"""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.results import RESULTS_PATH

BENCHMARKS = {
    "s2": "benchmarks.bench_s2",
    "bucketing": "benchmarks.bench_bucketing",
    "geoclass": "benchmarks.bench_geoclass",
    "geoclass_job": "benchmarks.bench_geoclass_job",
    "training": "benchmarks.bench_training",
    "combination": "benchmarks.bench_combination",
    "image_jobs": "benchmarks.bench_image_jobs",
    "accuracy": "benchmarks.bench_accuracy",
    "locate": "benchmarks.bench_locate",
    "scale": "benchmarks.bench_scale",
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    failed = []
    seconds: dict[str, int] = {}
    begun = time.time()
    for name in names:
        module = BENCHMARKS[name]
        print(f"\n=== {name}: python -m {module}", flush=True)
        started = time.time()
        code = subprocess.call([sys.executable, "-m", module])
        seconds[name] = round(time.time() - started)
        print(f"=== {name}: exit {code} after {seconds[name]} s", flush=True)
        if code:
            failed.append(name)
    print(f"\nbenchmark seconds: {seconds}; all: {time.time() - begun:.0f} s", flush=True)
    from benchmarks.report import write_report

    path = write_report()
    print(f"\nresults: {RESULTS_PATH}\nreport:  {path}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
