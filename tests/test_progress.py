"""Standalone Beam jobs: quiet logs, progress lines per stage, one summary line saying where they wrote."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import progress

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_progress_logs_first_rows_then_at_most_every_interval(caplog, monkeypatch):
    monkeypatch.setenv("CPLANET_PROGRESS_SECONDS", "10")
    progress.reset()
    with caplog.at_level(logging.INFO, logger="cplanet.progress"):
        assert progress.advance("job", "read", 100, now=0.0) == 100
        progress.advance("job", "read", 100, now=5.0)
        progress.advance("job", "written", 7, now=5.0)
        assert progress.advance("job", "read", 1000, now=10.5) == 1200
    assert [r.getMessage() for r in caplog.records] == [
        "job: read 100 rows so far", "job: written 7 rows so far", "job: read 1,200 rows so far"]
    progress.reset()


def test_standalone_job_log_is_quiet_shows_progress_and_one_summary_with_where_it_wrote(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    table = pa.table({
        "photo_id": [f"p{i}" for i in range(n)],
        "lat": rng.uniform(-60, 60, n),
        "lng": rng.uniform(-180, 180, n),
        "embedding": pa.array([list(v) for v in rng.normal(size=(n, 4)).astype(np.float32)],
                              type=pa.list_(pa.float32())),
    })
    pq.write_table(table, tmp_path / "features.parquet")
    out = tmp_path / "bucketed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.bucket_cells", "--features", str(tmp_path / "features.parquet"),
         "--output", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert not any("Converting string literal" in line for line in lines)
    assert "Traceback" not in done.stderr
    summaries = [line for line in lines if "rows in 40, rows out 40" in line]
    assert len(summaries) == 1, lines
    assert str(out / "cells") in summaries[0] and str(out / "photos") in summaries[0]
    assert any("bucket_cells: read 40 rows so far" in line for line in lines)
    assert any("bucket_cells: written" in line for line in lines)
    assert len(lines) <= 15, "\n".join(lines)


def test_a_second_job_in_one_process_counts_its_rows_from_zero():
    """run_all runs extract_features twice in one process; the test features said "written 36 rows so far"
    after one row because the train features' 35 were still counted."""
    import apache_beam as beam

    from pipelines.common import CommitPolicy, local_pipeline, run_job

    progress.reset()
    progress.advance("job", "written", 35)  # the job before, in this process
    pipeline = local_pipeline()
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda _: progress.advance("job", "written", 1))
    run_job(pipeline, "job", policy=CommitPolicy(allow_empty=True))  # no rows counted in: nothing to commit
    assert progress.advance("job", "written", 0) == 3
    progress.reset()
