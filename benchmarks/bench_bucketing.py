"""Bucketing throughput: the Beam ``bucket_cells`` job vs a pure NumPy pass over the same Parquet file.

1,000,000 photos with 128-d float32 embeddings at real photo locations (the 100k MP-16 coordinates, each
repeated with a few metres of jitter) are written once into a temp dir. Then, in the same run:

- the Beam job end to end (launch, read, validate, dedup, cell ids, per-cell sums, write the three outputs,
  commit), with its pipeline options printed;
- a NumPy pass: read the file, cell ids, per-cell count/xyz/feature sums (sort + ``np.add.reduceat``).

Goal: the job reaches at least 1/4 of the NumPy pass's throughput. Records key ``bucketing``.

    python -m benchmarks.bench_bucketing [--rows 1000000] [--dim 128]
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.results import record
from partition_gen.geo import latlng_to_xyz
from partition_gen.s2cells import latlng_to_cell_ids
from pipelines import bucket_cells, common
from sampledata.paths import mp16_coordinates
from schemas import columns as c
from schemas.cli import Parser
from schemas.io import SUCCESS_MARKER

ROW_GROUP_ROWS = 65_536


def write_input(path: str, rows: int, dim: int, seed: int = 0) -> None:
    coords = pd.read_csv(mp16_coordinates())
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(coords), size=rows)
    lat = np.clip(coords["LAT"].to_numpy()[pick] + rng.normal(scale=1e-4, size=rows), -90, 90)
    lng = coords["LON"].to_numpy()[pick] + rng.normal(scale=1e-4, size=rows)
    lng = (lng + 180.0) % 360.0 - 180.0
    emb = rng.normal(size=(rows, dim)).astype(np.float32)
    os.makedirs(path)
    table = pa.table(
        {
            c.PHOTO_ID: pa.array([f"p{i:08d}" for i in range(rows)]),
            c.LAT: lat,
            c.LNG: lng,
            c.EMBEDDING: pa.ListArray.from_arrays(pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32)), emb.reshape(-1)),
        }
    )
    pq.write_table(table, os.path.join(path, "part-00000.parquet"), row_group_size=ROW_GROUP_ROWS)
    open(os.path.join(path, SUCCESS_MARKER), "w").close()


def numpy_pass(path: str, level: int) -> int:
    """Read, cell ids, per-cell sums; returns the number of cells."""
    table = pq.read_table(os.path.join(path, "part-00000.parquet"), columns=[c.LAT, c.LNG, c.EMBEDDING])
    lat = table.column(c.LAT).to_numpy()
    lng = table.column(c.LNG).to_numpy()
    emb = pc.list_flatten(table.column(c.EMBEDDING)).to_numpy().reshape(len(lat), -1)
    ids = latlng_to_cell_ids(lat, lng, level=level)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    counts = np.diff(np.append(starts, len(ids)))
    xyz = np.add.reduceat(latlng_to_xyz(lat, lng)[order], starts, axis=0)
    feats = np.add.reduceat(emb[order].astype(np.float64), starts, axis=0)
    assert counts.sum() == len(ids) and xyz.shape[0] == feats.shape[0]
    return len(starts)


def main(argv: list[str] | None = None) -> dict:
    parser = Parser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--level", type=int, default=14)
    args, beam_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_bucketing_") as tmp:
        features = os.path.join(tmp, "features")
        started = time.perf_counter()
        write_input(features, args.rows, args.dim)
        size_mb = os.path.getsize(os.path.join(features, "part-00000.parquet")) / 2**20
        print(f"input: {args.rows:,} photos x {args.dim}-d, {size_mb:.0f} MiB, written in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        n_cells_numpy = numpy_pass(features, args.level)
        numpy_s = time.perf_counter() - started
        print(f"numpy pass: {numpy_s:.2f} s, {args.rows / numpy_s:,.0f} photos/s, {n_cells_numpy:,} cells")

        job_argv = [f"--features={features}", f"--output={os.path.join(tmp, 'out')}", f"--level={args.level}", *beam_args]
        options = common.offline_pipeline_args(beam_args)
        print("beam job options:", " ".join(options))
        started = time.perf_counter()
        summary = bucket_cells.run(job_argv)
        job_s = time.perf_counter() - started
        n_cells_job = pq.read_table(os.path.join(tmp, "out", "cells"), columns=[c.CELL_ID]).num_rows
        print(f"beam job:   {job_s:.2f} s, {args.rows / job_s:,.0f} photos/s, {n_cells_job:,} cells")
        if n_cells_job != n_cells_numpy or summary.rows_out != args.rows:
            raise SystemExit(f"job and NumPy pass disagree: {n_cells_job} vs {n_cells_numpy} cells, {summary.line()}")

    ratio = numpy_s / job_s
    print(f"job / numpy throughput: {ratio:.2f} (goal >= 0.25)")
    figures = {
        "rows": args.rows,
        "embedding_dim": args.dim,
        "level": args.level,
        "cells": n_cells_job,
        "job_seconds": round(job_s, 2),
        "job_photos_per_s": round(args.rows / job_s),
        "numpy_seconds": round(numpy_s, 2),
        "numpy_photos_per_s": round(args.rows / numpy_s),
        "job_to_numpy_throughput": round(ratio, 3),
        "goal_met": ratio >= 0.25,
        "beam_options": options,
    }
    record("bucketing", figures)
    return figures


if __name__ == "__main__":
    main()
