"""The portable path (how jobs reach Flink): submit bucket_cells to a local Beam job service on loopback."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import bucket_cells, common
from schemas import Reason
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, read_table


@pytest.fixture()
def job_endpoint(tmp_path):
    """A local job service (the same Job API a Flink job server exposes), started and stopped by this test."""
    port_file = tmp_path / "job_service.port"
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port=0",
            f"--port_file={port_file}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not port_file.exists():
            if service.poll() is not None or time.time() > deadline:
                raise RuntimeError("the local job service did not start")
            time.sleep(0.1)
        yield f"localhost:{port_file.read_text().strip()}"
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_bucket_cells_through_the_portable_job_api(tmp_path, job_endpoint):
    rng = np.random.default_rng(2)
    n = 300
    lat, lng = rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)
    lat[0] = 95.0  # one dead letter, so the counters have to come back through the job service
    features = tmp_path / "features"
    features.mkdir()
    pq.write_table(
        pa.table(
            {
                c.PHOTO_ID: [f"p{i}" for i in range(n)],
                c.LAT: lat,
                c.LNG: lng,
                c.EMBEDDING: pa.array(list(rng.normal(size=(n, 4)).astype(np.float32)), type=pa.list_(pa.float32())),
            }
        ),
        features / "part-0.parquet",
    )
    (features / SUCCESS_MARKER).touch()
    out = tmp_path / "out"
    argv = [
        f"--features={features}",
        f"--output={out}",
        "--runner=PortableRunner",
        f"--job_endpoint={job_endpoint}",
        "--environment_type=LOOPBACK",
    ]
    assert common.offline_pipeline_args(argv[2:]) == argv[2:]  # no offline defaults leak into a portable job
    summary = bucket_cells.run(argv)
    assert (summary.rows_in, summary.rows_out, summary.dead_letters) == (n, n - 1, {Reason.LAT_OUT_OF_RANGE: 1})
    cells = read_table(str(out / "cells")).to_pandas()
    assert cells[c.N_IMAGES].sum() == n - 1
    photos = read_table(str(out / "photos")).to_pandas()
    want = pd.Series(bucket_cells.latlng_to_cell_ids(lat[1:], lng[1:]), index=[f"p{i}" for i in range(1, n)])
    assert (photos.set_index(c.PHOTO_ID)[c.CELL_ID].astype(np.uint64).sort_index() == want.sort_index()).all()
