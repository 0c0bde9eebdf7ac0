"""Benchmark ``geoclass_sets_job``: all of the paper's sets through the Beam job at 2.8M nodes.

    python -m benchmarks.bench_geoclass_job                   # 2.8M nodes x 128-d (about 5 minutes idle)
    python -m benchmarks.bench_geoclass_job --nodes 300000    # quick look

Writes a cells artifact (``schemas.CELLS``) of 2.8M level-14 cells drawn from the MP-16 density (as
``bench_geoclass`` does) with 128-d feature sums, then runs ``python -m pipelines.generate_geoclass_sets``
as a child process on the default offline runner: sets 1 and 2 (10,000 classes), three sampled sets
(Table 1: random alpha, beta, feature subspace and class count) and a PlaNet set (t_min 50, t_max 1000),
without the PNG maps. Measured: wall and CPU seconds with the load average, peak RSS of every process of
the job (each offline worker is a process; in-process by default), and how many times the initial graph
was built (the job's log says "initial graph: ..." once per build) against the number of sets.
Records key ``geoclass_sets_job``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_geoclass import LEVEL, draw_nodes, smooth_features
from benchmarks.bench_scale import TreeSampler
from benchmarks.results import record
from partition_gen import s2cells
from schemas.cli import Parser
from schemas.io import SUCCESS_MARKER
from schemas.tables import CELLS

LOG = logging.getLogger("bench_geoclass_job")


def write_cells(directory: Path, n_nodes: int, dim: int, rows_per_group: int = 100_000) -> int:
    """A cells artifact of ``n_nodes`` MP-16-density cells with ``dim``-d feature sums; returns photos."""
    cell_ids, counts = draw_nodes(n_nodes)
    directory.mkdir(parents=True)
    with pq.ParquetWriter(directory / "cells-00000-of-00001.parquet", CELLS) as writer:
        for lo in range(0, n_nodes, rows_per_group):
            ids, n = cell_ids[lo : lo + rows_per_group], counts[lo : lo + rows_per_group]
            xyz = s2cells.cell_center_xyz(ids)
            sums = smooth_features(xyz, dim, seed=1 + lo).astype(np.float64) * n[:, None]
            offsets = pa.array(np.arange(ids.size + 1, dtype=np.int32) * dim, type=pa.int32())
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        pa.array(ids, type=pa.uint64()),
                        pa.array(np.full(ids.size, LEVEL, dtype=np.int8), type=pa.int8()),
                        pa.array(n.astype(np.int64)),
                        pa.array(xyz[:, 0] * n),
                        pa.array(xyz[:, 1] * n),
                        pa.array(xyz[:, 2] * n),
                        pa.ListArray.from_arrays(offsets, pa.array(sums.ravel())),
                    ],
                    schema=CELLS,
                )
            )
    (directory / SUCCESS_MARKER).write_text("")
    return int(counts.sum())


def main(argv: list[str] | None = None) -> dict:
    parser = Parser(description="every geoclass set through the Beam job")
    parser.add_argument("--nodes", type=int, default=2_800_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-geoclass-job-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        photos = write_cells(root / "cells", args.nodes, args.dim)
        LOG.info("cells artifact: %d cells, %d photos in %.0f s", args.nodes, photos, time.perf_counter() - started)
        command = [
            sys.executable, "-m", "pipelines.generate_geoclass_sets", "--cells", str(root / "cells"),
            "--output", str(root / "sets"), "--n_classes", str(args.classes), "--n_sampled", "3", "--seed", "0",
            "--planet", "50,1000", "--no_maps",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        log_path = root / "job.log"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        with open(log_path, "w") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            sampler = TreeSampler(child.pid)
            sampler.start()
            _, status, usage = os.wait4(child.pid, 0)
            sampler.stop.set()
            sampler.join()
        wall = time.perf_counter() - started
        text = log_path.read_text()
        timeline = [(round(t - sampler.samples[0][0], 1), round(r / 2**30, 2)) for t, r in sampler.samples[::25]]
        code = os.waitstatus_to_exitcode(status)
        if code:
            raise RuntimeError(f"generate_geoclass_sets exited {code}:\n{text[-3000:]}")
        sets = json.loads((root / "sets" / "sets.json").read_text())
    n_sets = len(sets.get("sets", sets)) if isinstance(sets, dict) else len(sets)
    builds = text.count("initial graph:")
    figures = {
        "nodes": args.nodes,
        "feature_dim": args.dim,
        "photos": photos,
        "sets": n_sets,
        "command": " ".join(["python"] + command[1:]),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "worker_processes": len(sampler.peak_by_pid),
        "peak_rss_per_process_gb": sorted(round(v / 2**30, 2) for v in sampler.peak_by_pid.values()),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "rss_gb_every_5s": timeline,
        "graph_builds": builds,
        "graph_built_once_per_worker": 1 <= builds <= len(sampler.peak_by_pid),
        "set_seconds": [line.split(": ", 2)[-1] for line in text.splitlines() if " classes in " in line][:12],
    }
    if not args.no_record:
        record("geoclass_sets_job", figures)
    print(json.dumps(figures, indent=1), flush=True)
    return figures


if __name__ == "__main__":
    main()
