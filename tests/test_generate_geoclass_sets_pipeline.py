"""The Beam job: the composite gives the same sets as the code without Beam, the launcher writes a
complete artifact with balanced accounting, and bad parameter sets stop it before it starts."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from partition_gen.geoclass_sets import generate_geoclass_sets, load_geoclass_sets
from partition_gen.graph import cells_table_from_points
from partition_gen.params import GeoclassSetSpec, default_specs
from pipelines import generate_geoclass_sets as job
from pipelines.common import local_pipeline
from schemas.io import SUCCESS_MARKER, write_table_atomic

LOCAL = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def cells_dir(tmp_path_factory):
    rng = np.random.default_rng(7)
    lat = np.r_[rng.normal(40, 10, 1200), np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))]
    lng = np.r_[rng.normal(-90, 15, 1200), rng.uniform(-180, 180, 300)]
    table = cells_table_from_points(lat, lng, rng.normal(size=(lat.size, 6)))
    path = tmp_path_factory.mktemp("cells") / "cells"
    write_table_atomic(table, str(path / "part-00000.parquet"))
    open(path / SUCCESS_MARKER, "w").close()
    return str(path), table


def test_composite_builds_the_same_sets_as_plain_python(cells_dir):
    path, table = cells_dir
    specs = default_specs(25, n_sampled=1, seed=5, embedding_dim=6, planet=(5, 50))
    expected = generate_geoclass_sets(table, specs)
    with local_pipeline() as p:
        out = (
            p
            | beam.Create([s.to_json() for s in specs])
            | job.BuildGeoclassSets(path)
            | beam.MapTuple(lambda name, labels: (name, labels.tolist()))
        )
        assert_that(out, equal_to([(n, expected.assignments[n].tolist()) for n in expected.set_names]))


def test_job_writes_a_complete_artifact_with_balanced_accounting(cells_dir, tmp_path):
    path, table = cells_dir
    output = str(tmp_path / "geoclass_sets")
    summary = job.run(
        [
            "--cells",
            path,
            "--output",
            output,
            "--n_classes",
            "20",
            "--n_sampled",
            "2",
            "--seed",
            "3",
            "--planet",
            "5,80",
            *LOCAL,
        ]
    )
    assert summary.rows_in == 5 and summary.rows_out == 5 and summary.dead_total == 0 and summary.balanced
    assert os.path.exists(os.path.join(output, SUCCESS_MARKER))
    sets = load_geoclass_sets(output)
    assert sets.set_names == ["set1", "set2", "set3", "set4", "planet"]
    specs = default_specs(20, 2, seed=3, embedding_dim=6, planet=(5, 80))
    direct = generate_geoclass_sets(table, specs)
    assert sets.checksum == direct.checksum
    assert sorted(os.listdir(os.path.join(output, "maps"))) == sorted(f"{n}.png" for n in sets.set_names)
    assert not [d for d in os.listdir(tmp_path) if "staging" in d]


def test_spec_file_and_refusals_before_the_pipeline_starts(cells_dir, tmp_path):
    path, table = cells_dir
    spec_file = tmp_path / "specs.json"
    spec_file.write_text(json.dumps([GeoclassSetSpec("set1", n_classes=12, beta=(0, 1)).to_json()]))
    output = str(tmp_path / "one")
    job.run(["--cells", path, "--output", output, "--specs", str(spec_file), "--no_maps", *LOCAL])
    assert load_geoclass_sets(output).n_classes == {"set1": 12}

    too_many = tmp_path / "too_many.json"
    too_many.write_text(json.dumps([GeoclassSetSpec("set1", n_classes=table.num_rows + 1).to_json()]))
    refused = str(tmp_path / "refused")
    with pytest.raises(ValueError, match=f"'set1' asks for {table.num_rows + 1} classes.*cells: {path}"):
        job.run(["--cells", path, "--output", refused, "--specs", str(too_many), *LOCAL])
    assert not os.path.exists(refused)
    with pytest.raises(FileNotFoundError):
        job.run(["--cells", str(tmp_path / "nope"), "--output", refused, "--n_classes", "3", *LOCAL])
