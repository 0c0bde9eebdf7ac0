"""Shared by every benchmark: merge one measure's figures into bench/results.json under its key."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS_PATH = Path(os.environ.get("CPLANET_BENCH_DIR", Path(__file__).resolve().parent.parent / "bench")) / "results.json"


def machine() -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "numpy": np.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def record(key: str, figures: dict) -> None:
    """Write ``figures`` under ``key`` (replacing that key only), stamped with time and machine."""
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else {}
    results[key] = {**figures, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine()}
    tmp = RESULTS_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS_PATH)
