"""Launched the way a Flex Template (or Airflow's Beam operator) launches: the launching call returns right after
submission, and the job itself checks its accounting and commits its output -- or refuses to."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.partitions import build_partitions, save_partitions
from pipelines import batch_predict, bucket_cells
from schemas import columns as c
from schemas.artifacts import SUCCESS_MARKER, read_marker, verify
from schemas.io import read_table
from tests.submit_only_runner import SubmitOnlyRunner
from tests.test_batch_predict import make_model, write_manifest
from tests.test_partitions import random_sets

SUBMIT_ONLY = ["--runner=tests.submit_only_runner.SubmitOnlyRunner"]


def _finished_job():
    """Wait for the job the last launch submitted; returns its recorded outcome (None: it succeeded)."""
    thread, result = SubmitOnlyRunner.jobs[-1]
    thread.join(timeout=600)
    assert result.done.is_set()
    return result.error


def _features(path, n, bad=0, seed=0):
    rng = np.random.default_rng(seed)
    lat = rng.uniform(-60, 60, n)
    lat[:bad] = 123.0  # out of range: dead letters
    pq.write_table(
        pa.table({
            c.PHOTO_ID: [f"p{i}" for i in range(n)],
            c.LAT: lat,
            c.LNG: rng.uniform(-180, 180, n),
            c.EMBEDDING: pa.array(list(rng.normal(size=(n, 4)).astype(np.float32)), type=pa.list_(pa.float32())),
        }),
        path,
    )
    return path


@pytest.mark.parametrize("wait_flag", [[], ["--wait_until_finish=false"]])
def test_bucket_cells_commits_itself_after_the_launcher_returned(tmp_path, wait_flag):
    features = _features(tmp_path / "features.parquet", 200, bad=3)
    out = tmp_path / "out"
    assert bucket_cells.run([f"--features={features}", f"--output={out}", *SUBMIT_ONLY, *wait_flag]) is None
    assert _finished_job() is None
    marker = verify(str(out / "photos"), "photos", full=True)
    assert (marker["rows_in"], marker["rows_out"], marker["dead_letters"]) == (200, 197, {"lat_out_of_range": 3})
    assert marker["counters"]["cell_images"] == 197
    assert read_table(str(out / "photos")).num_rows == 197
    assert int(read_table(str(out / "cells")).column(c.N_IMAGES).to_numpy().sum()) == 197
    assert read_table(str(out / "dead_letters")).num_rows == 3
    assert not list(tmp_path.glob("**/*.staging-*"))


def test_a_submitted_job_whose_accounting_fails_commits_nothing(tmp_path):
    features = _features(tmp_path / "features.parquet", 20, bad=15)  # 75% dead letters > the 0.5 default
    out = tmp_path / "out"
    assert bucket_cells.run([f"--features={features}", f"--output={out}", *SUBMIT_ONLY]) is None
    error = _finished_job()
    assert error is not None and "more than --max_dead_letter_fraction 0.5" in str(error)
    assert not list(out.glob(f"*/{SUCCESS_MARKER}")) and not list(tmp_path.glob("**/*.staging-*"))


def test_batch_predict_commits_itself_after_the_launcher_returned(tmp_path):
    assignments, n_images, xyz_sum = random_sets(11, n_nodes=200, ks=(5, 9, 14))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-T")
    save_partitions(parts, str(tmp_path / "partitions"))
    make_model(str(tmp_path / "model"), parts.set_names, parts.n_classes, "sets-T")
    write_manifest(tmp_path / "m.parquet", 12, seed=1)  # 12 good rows + 4 bad ones
    out = tmp_path / "predictions"
    argv = ["--manifest", str(tmp_path / "m.parquet"), "--model", str(tmp_path / "model"), "--partitions",
            str(tmp_path / "partitions"), "--output", str(out), "--run_date", "2024-05-01", *SUBMIT_ONLY]
    assert batch_predict.run(argv) is None
    assert _finished_job() is None
    run_dir = out / "run_date=2024-05-01"
    marker = read_marker(str(run_dir))
    assert (marker["rows_in"], marker["rows_out"], sum(marker["dead_letters"].values())) == (16, 12, 4)
    assert read_table(str(run_dir)).num_rows == 12  # one default method
    assert read_table(f"{out}.dead_letters/run_date=2024-05-01").num_rows == 4
