"""The geoclass job's memory savings change no class: a worker merges full-dimension sets in place on its
shared graph and refills the features from the cells, and sampled sets gather their feature dimensions a
block of rows at a time; every set equals the one the plain function builds on a fresh graph, in any order."""
from __future__ import annotations

import numpy as np
import pytest

from partition_gen.geoclass_sets import generate_set
from partition_gen.graph import graph_from_cells_table
from partition_gen.merging import _feature_sums_and_norms
from partition_gen.params import GeoclassSetSpec, default_specs
from pipelines import generate_geoclass_sets as job
from tests.cells_artifact import write_cells_artifact


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    return write_cells_artifact(tmp_path_factory.mktemp("cells"), 11, (45, 10), (8, 12), 1500, 8)


def test_worker_sets_in_place_equal_fresh_graph_sets_and_features_are_restored(cells):
    path, table = cells
    specs = default_specs(30, n_sampled=2, seed=3, embedding_dim=8, planet=(4, 40))
    # Full-dimension feature set first and again last: the second run needs the refilled features.
    again = GeoclassSetSpec.from_json({**specs[0].to_json(), "name": "set1_again"})
    order = [specs[0], *specs[2:], specs[1], again]
    fn = job._BuildSetFn(path, with_features=True)
    fn.setup()
    original = fn._holder.graph.features.copy()
    got = {}
    for spec in order:
        for name, labels in fn.process(spec.to_json()):
            got[name] = labels
    assert np.array_equal(fn._holder.graph.features, original)  # bit for bit after the in-place merges
    for spec in order:
        fresh = graph_from_cells_table(table)
        expected = generate_set(fresh, spec)
        assert np.array_equal(got[spec.name], expected), spec.name
    assert np.array_equal(got["set1_again"], got[specs[0].name])


@pytest.mark.parametrize("dims", [None, [5, 0, 3, 7]])
def test_blockwise_feature_sums_equal_the_whole_array_expression(cells, dims, monkeypatch):
    """Small blocks (many of them) give exactly the whole-array float32 products the merge used before."""
    _, table = cells
    graph = graph_from_cells_table(table)
    monkeypatch.setattr("partition_gen.merging._ROWS_PER_BLOCK", 37)
    chosen = graph.features if dims is None else graph.features[:, dims]
    expected = np.ascontiguousarray(chosen) * graph.n_images[:, None].astype(np.float32)
    feat, norms = _feature_sums_and_norms(graph, None if dims is None else np.asarray(dims), in_place=False)
    assert feat.flags.c_contiguous and feat.dtype == np.float32
    assert np.array_equal(feat, expected)
    assert np.array_equal(norms, np.sqrt(np.einsum("ij,ij->i", expected, expected, dtype=np.float64)))
