"""gs:// for real: the chain against a GCS emulator (``gcp-storage-emulator``) on 127.0.0.1, started and stopped here.

Beam's FileSystems and Parquet I/O reach the emulator through ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``; a
dummy authorized-user credentials file with a far-future token keeps google-auth from looking for (and retrying)
real credentials. TensorFlow's own gs:// client ignores the emulator, so the trainer works on local mirrors and
the model export is copied through the same FileSystems layer (``schemas.artifacts``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sampledata as sample_data
from pipelines import bucket_cells, run_all
from schemas import artifacts
from schemas import columns as c

BUCKET = "cplanet-test"


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """The emulator, its environment for this process, and a bucket; stopped (and the environment restored) after."""
    home = tmp_path_factory.mktemp("gcs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emulator = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1", f"--port={port}",
         f"--default-bucket={BUCKET}", "--in-memory", "--quiet"],
        cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    credentials = home / "credentials.json"
    credentials.write_text(json.dumps({
        "type": "authorized_user", "client_id": "dummy", "client_secret": "dummy", "refresh_token": "dummy",
        "token": "dummy", "expiry": "2999-01-01T00:00:00Z",
    }))
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
           "GOOGLE_CLOUD_PROJECT": "cplanet-test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if emulator.poll() is not None or time.time() > deadline:
                raise RuntimeError("the GCS emulator did not start")
            time.sleep(0.2)
        yield f"gs://{BUCKET}"
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    paths = sample_data.make_sample(root / "sample", n_train=800, seed=3, model=sample_data.FeatureModel(dim=16), test_sets=("yfcc4k",), plot=False)
    test = pq.read_table(paths["test_yfcc4k"])
    test_path = root / "test.parquet"
    pq.write_table(test.slice(0, 60), test_path)
    config = root / "config.json"
    config.write_text(json.dumps({"classes_per_set": 8, "epochs": 2, "seed": 1, "n_sampled_sets": 1}))
    return {"train": paths["train"], "test": str(test_path), "config": str(config), "root": root}


def _report(text: bytes) -> dict:
    report = json.loads(text)
    for key in ("predictions", "truth"):  # paths: local in one run, gs:// in the other
        report.pop(key, None)
    return report


def test_run_all_on_gs_matches_a_local_run_and_resumes(gcs, small, caplog):
    workdir = f"{gcs}/work"
    args = ["--train", small["train"], "--test", small["test"], "--config", small["config"]]
    run_all.run([*args, "--workdir", workdir])
    local = small["root"] / "local_work"
    run_all.run([*args, "--workdir", str(local)])
    remote_report = _report(artifacts.read_bytes(f"{workdir}/evaluation.json"))
    assert remote_report == _report((local / "evaluation.json").read_bytes())
    # Nothing landed in a local "gs:" folder, and every artifact in the bucket is complete and verified.
    assert not os.path.exists("gs:") and not os.path.exists(os.path.join(str(small["root"]), "gs:"))
    for name in ("bucket/cells", "bucket/photos", "sets", "examples", "model", "partitions",
                 "predictions/run_date=1970-01-01"):
        artifacts.verify(f"{workdir}/{name}", name, full=True)
    assert not [p for p in artifacts.list_files(gcs) if ".staging-" in p]

    caplog.set_level("INFO", logger="cplanet.run_all")
    run_all.run([*args, "--workdir", workdir, "--resume"])
    skipped = [r.getMessage() for r in caplog.records if "skipped (--resume)" in r.getMessage()]
    assert len(skipped) == 6, skipped

    # An export killed before its marker: the model's readers refuse it.
    from trainer.export import read_manifest

    artifacts.delete_file(f"{workdir}/model/_SUCCESS")
    with pytest.raises(artifacts.IncompleteArtifactError, match="model"):
        read_manifest(f"{workdir}/model")


def test_an_aborted_job_leaves_no_staging_objects_on_gs(gcs, tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    lat = rng.uniform(-50, 50, n)
    lat[:30] = 99.0  # 75% dead letters: the job's own check fails, nothing is committed
    features = tmp_path / "features.parquet"
    pq.write_table(pa.table({
        c.PHOTO_ID: [f"p{i}" for i in range(n)], c.LAT: lat, c.LNG: rng.uniform(-50, 50, n),
        c.EMBEDDING: pa.array(list(rng.normal(size=(n, 4)).astype(np.float32)), type=pa.list_(pa.float32())),
    }), features)
    with pytest.raises(Exception, match="max_dead_letter_fraction"):
        bucket_cells.run([f"--features={features}", f"--output={gcs}/aborted", "--direct_num_workers=1"])
    assert artifacts.list_files(f"{gcs}/aborted") == []
    assert not [p for p in artifacts.list_files(gcs) if "aborted" in p]
    # The same input with a tolerant threshold commits on gs://, marker last, verified.
    summary = bucket_cells.run([f"--features={features}", f"--output={gcs}/kept", "--max_dead_letter_fraction=1",
                                "--direct_num_workers=1"])
    assert (summary.rows_in, summary.rows_out) == (n, 10)
    assert artifacts.verify(f"{gcs}/kept/photos", "photos", full=True)["rows_out"] == 10
    assert not [p for p in artifacts.list_files(gcs) if ".staging-" in p]
