"""A cluster-shaped run: jobs submitted with ``python -m`` to Beam's job service, executed by an EXTERNAL SDK worker
pool started in another directory (as a Flink task manager runs them). Outputs must equal the local runner's.

The worker pool's processes have another working directory than the launcher, so a relative ``--output`` only
works because launchers make local paths absolute at launch; every class the jobs pickle must be importable by
module name (no ``__main__`` classes), which ``python -m`` on a remote worker proves.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.partitions import build_partitions, save_partitions
from pipelines import batch_predict, bucket_cells, make_examples
from schemas import columns as c
from schemas.artifacts import read_marker, write_marker
from schemas.io import read_table
from tests.test_batch_predict import make_model, write_manifest
from tests.test_make_examples import _write_sets
from tests.test_partitions import random_sets

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A job service and an EXTERNAL worker pool, started once, the pool in its own directory."""
    home = tmp_path_factory.mktemp("worker_home")
    # The pool starts each SDK worker as `python -c ...`: the venv's python must come first on PATH.
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    job_port, pool_port = _free_port(), _free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(job_port, service, "the job service")
        _wait_for_port(pool_port, pool, "the worker pool")
        yield {
            "home": home,
            "args": ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                     "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"],
        }
    finally:
        for process in (pool, service):
            process.terminate()
        for process in (pool, service):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _launch(module: str, args, cwd, cluster) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", module, *args, *cluster["args"]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _sorted(table: pa.Table, keys) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def _features(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(4)
    lat, lng = rng.uniform(30, 50, n), rng.uniform(-10, 30, n)
    lat[0] = 91.0  # a dead letter
    ids = [f"p{i}" for i in range(n)]
    ids[5] = "p4"  # a repeated id
    pq.write_table(pa.table({
        c.PHOTO_ID: ids, c.LAT: lat, c.LNG: lng,
        c.EMBEDDING: pa.array(list(rng.normal(size=(n, 8)).astype(np.float32)), type=pa.list_(pa.float32())),
    }), path)
    return path


def _assert_same_cells(remote: Path, local: Path) -> None:
    for name in ("photos", "dead_letters"):
        assert read_marker(str(remote / name))["rows_in"] == read_marker(str(local / name))["rows_in"]
    a, b = read_table(str(remote / "photos")), read_table(str(local / "photos"))
    assert _sorted(a, [c.PHOTO_ID]).column(c.PHOTO_ID).to_pylist() == _sorted(b, [c.PHOTO_ID]).column(c.PHOTO_ID).to_pylist()
    assert _sorted(a, [c.PHOTO_ID]).column(c.CELL_ID).to_pylist() == _sorted(b, [c.PHOTO_ID]).column(c.CELL_ID).to_pylist()
    ca, cb = _sorted(read_table(str(remote / "cells")), [c.CELL_ID]), _sorted(read_table(str(local / "cells")), [c.CELL_ID])
    assert ca.column(c.CELL_ID).to_pylist() == cb.column(c.CELL_ID).to_pylist()
    assert ca.column(c.N_IMAGES).to_pylist() == cb.column(c.N_IMAGES).to_pylist()
    for col in (c.X_SUM, c.Y_SUM, c.Z_SUM):
        np.testing.assert_allclose(ca.column(col).to_numpy(), cb.column(col).to_numpy(), rtol=0, atol=1e-9)
    fa = np.stack(ca.column(c.FEATURE_SUM).to_numpy(zero_copy_only=False))
    fb = np.stack(cb.column(c.FEATURE_SUM).to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-9)
    dead_a = sorted(read_table(str(remote / "dead_letters")).column(c.PHOTO_ID).to_pylist())
    assert dead_a == sorted(read_table(str(local / "dead_letters")).column(c.PHOTO_ID).to_pylist())


def test_bucket_cells_and_make_examples_on_an_external_worker_pool(cluster, tmp_path):
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    features = _features(launcher / "features.parquet")
    local = tmp_path / "local"
    bucket_cells.run([f"--features={features}", f"--output={local}", *LOCAL])

    # Relative output: resolved against the launcher's directory, not the workers'.
    _launch("pipelines.bucket_cells", ["--features", "features.parquet", "--output", "rel_out"], launcher, cluster)
    assert not (cluster["home"] / "rel_out").exists()
    _assert_same_cells(launcher / "rel_out", local)
    # Absolute output.
    _launch("pipelines.bucket_cells", ["--features", str(features), "--output", str(tmp_path / "abs_out")],
            launcher, cluster)
    _assert_same_cells(tmp_path / "abs_out", local)

    # make_examples on the bucketed photos, remote vs local: the same examples (ids, split counts).
    photos = read_table(str(local / "photos"))
    cells = np.unique(photos.column(c.CELL_ID).to_numpy()).astype(np.uint64)
    sets = tmp_path / "sets"
    _write_sets(sets, cells, np.stack([np.arange(len(cells)) % 4, np.arange(len(cells)) % 3], axis=1))
    write_marker(str(sets))
    make_examples.run([f"--photos={local / 'photos'}", f"--geoclass_sets={sets}", f"--output={tmp_path / 'ex_local'}",
                       *LOCAL])
    _launch("pipelines.make_examples", ["--photos", str(local / "photos"), "--geoclass_sets", str(sets),
                                        "--output", "ex_remote"], launcher, cluster)
    remote_manifest = read_marker(str(launcher / "ex_remote"))
    local_manifest = read_marker(str(tmp_path / "ex_local"))
    assert remote_manifest["counters"] == local_manifest["counters"]
    assert remote_manifest["rows_out"] == local_manifest["rows_out"] == photos.num_rows


def test_batch_predict_on_an_external_worker_pool(cluster, tmp_path):
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    assignments, n_images, xyz_sum = random_sets(11, n_nodes=200, ks=(5, 9, 14))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-T")
    save_partitions(parts, str(launcher / "partitions"))
    make_model(str(launcher / "model"), parts.set_names, parts.n_classes, "sets-T")
    write_manifest(launcher / "m.parquet", 30, seed=2)
    common = ["--manifest", "m.parquet", "--model", "model", "--partitions", "partitions", "--run_date",
              "2024-05-01", "--methods", "paper", "--top_k", "3"]
    os.chdir(launcher)
    try:
        batch_predict.run([*common, "--output", str(tmp_path / "local"), *LOCAL])
    finally:
        os.chdir(ROOT)
    _launch("pipelines.batch_predict", [*common, "--output", "preds"], launcher, cluster)
    key = [c.PHOTO_ID, c.METHOD]
    remote = _sorted(read_table(str(launcher / "preds" / "run_date=2024-05-01")), key)
    local = _sorted(read_table(str(tmp_path / "local" / "run_date=2024-05-01")), key)
    assert remote.num_rows == local.num_rows > 0
    for col in (c.PHOTO_ID, c.METHOD, c.TOPK_PARTITION_IDS, c.MODEL_ID, c.PARTITIONS_ID):
        assert remote.column(col).to_pylist() == local.column(col).to_pylist(), col
    for col in (c.LAT, c.LNG, c.SCORE):
        np.testing.assert_allclose(remote.column(col).to_numpy(), local.column(col).to_numpy(), rtol=0, atol=1e-9)
    assert read_marker(str(launcher / "preds" / "run_date=2024-05-01"))["dead_letters"] == \
        read_marker(str(tmp_path / "local" / "run_date=2024-05-01"))["dead_letters"]


def test_python_m_bucket_cells_on_two_worker_processes(tmp_path):
    """The README's multi-process command, as ``python -m`` from another directory: nothing pickled from __main__."""
    launcher = tmp_path / "launcher"
    launcher.mkdir()
    _features(launcher / "features.parquet")
    local = tmp_path / "local"
    bucket_cells.run([f"--features={launcher / 'features.parquet'}", f"--output={local}", *LOCAL])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.bucket_cells", "--features", "features.parquet", "--output", "out",
         "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        cwd=launcher, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Can't pickle" not in done.stderr
    assert "bucket_cells: rows in 300, rows out 298" in done.stdout
    _assert_same_cells(launcher / "out", local)
