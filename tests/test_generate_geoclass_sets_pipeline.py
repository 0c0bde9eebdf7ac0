"""The Beam job: the composite gives the same sets as the code without Beam, the launcher writes a
complete artifact with balanced accounting, and bad parameter sets stop it before it starts."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import networkx as nx
import numpy as np
import pytest
import s2sphere
from apache_beam.testing.util import assert_that

from partition_gen.geoclass_sets import generate_geoclass_sets, load_geoclass_sets
from partition_gen.graph import graph_from_cells_table
from partition_gen.params import GeoclassSetSpec, default_specs
from pipelines import generate_geoclass_sets as job
from pipelines.common import local_pipeline
from schemas import columns as c
from schemas.io import SUCCESS_MARKER
from tests.cells_artifact import write_cells_artifact
from tests.test_planet import _slow_partition

LOCAL = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def cells_dir(tmp_path_factory):
    return write_cells_artifact(tmp_path_factory.mktemp("cells"), 7, (40, -90), (10, 15), 1200, 6)


def test_composite_builds_valid_sets_checked_by_independent_references(cells_dir):
    """The Beam composite's sets, checked without the code that made them: each merged set has exactly the
    asked number of classes, each a connected region of the cell graph (networkx); the PlaNet set groups the
    cells exactly as a recursive s2sphere partition does. Then the same labels as the plain function."""
    path, table = cells_dir
    specs = default_specs(25, n_sampled=1, seed=5, embedding_dim=6, planet=(5, 50))
    with local_pipeline() as p:
        out = (
            p
            | beam.Create([s.to_json() for s in specs])
            | job.BuildGeoclassSets(path)
            | beam.MapTuple(lambda name, labels: (name, labels.tolist()))
        )
        _COLLECTED.clear()
        assert_that(out, _collect)
    got = {name: np.asarray(labels) for name, labels in _COLLECTED}
    assert sorted(got) == sorted(s.name for s in specs)

    graph = graph_from_cells_table(table)
    adjacency = nx.Graph()
    adjacency.add_nodes_from(range(graph.n_nodes))
    for node in range(graph.n_nodes):
        adjacency.add_edges_from((node, int(j)) for j in graph.indices[graph.indptr[node] : graph.indptr[node + 1]])
    for spec in specs:
        labels = got[spec.name]
        assert labels.shape == (graph.n_nodes,)
        if spec.kind == "merge":
            assert sorted(set(labels.tolist())) == list(range(spec.n_classes)), spec.name
            for k in range(spec.n_classes):
                members = np.flatnonzero(labels == k).tolist()
                assert nx.is_connected(adjacency.subgraph(members)), f"{spec.name}: class {k} is not contiguous"
        else:
            ids = table.column(c.CELL_ID).to_numpy(zero_copy_only=False)
            counts = table.column(c.N_IMAGES).to_numpy(zero_copy_only=False)
            kept = _slow_partition(dict(zip(ids.tolist(), counts.tolist())), spec.t_min, spec.t_max)
            ancestor = {}
            for i, cell in enumerate(ids.tolist()):
                owner = [k for k in kept if s2sphere.CellId(k).contains(s2sphere.CellId(cell))]
                if owner:
                    ancestor[i] = owner[0]
            # Kept nodes: same label exactly when the same reference cell holds them.
            pairs = {(ancestor[i], int(labels[i])) for i in ancestor}
            assert len(pairs) == len(kept) == len({lab for _, lab in pairs}) == int(labels.max()) + 1

    expected = generate_geoclass_sets(table, specs)
    for name in expected.set_names:
        np.testing.assert_array_equal(got[name], expected.assignments[name])


_COLLECTED: list = []


def _collect(rows) -> None:
    """assert_that's matcher, run in this process by the in-memory DirectRunner: keep the rows to check."""
    _COLLECTED.extend(rows)


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


def test_a_damaged_cells_file_is_named_in_the_error(cells_dir, tmp_path):
    """A shard that is not Parquet (a cut-off copy, a stray file): the error names that file, through every
    way the job opens the artifact (the whole table, the streamed features, the shape from metadata)."""
    import shutil

    from schemas.io import read_table

    path, _ = cells_dir
    broken = tmp_path / "cells"
    shutil.copytree(path, broken)
    shard = sorted(broken.glob("*.parquet"))[0]
    shard.write_bytes(b"not parquet")
    for read in (lambda: read_table(str(broken)), lambda: job.cells_shape(str(broken)),
                 lambda: next(job._feature_batches(str(broken)))):
        with pytest.raises(ValueError, match=f"^{shard}: .*Parquet"):
            read()
    with pytest.raises(ValueError, match=str(shard)):
        job.run(["--cells", str(broken), "--output", str(tmp_path / "out"), "--n_classes", "3", *LOCAL])
    assert not (tmp_path / "out").exists()
