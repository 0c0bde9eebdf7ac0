"""Greedy merging: partition, contiguity, exact count, balance, visual vs geographic sets, and the exact
merge sequence against a slow networkx reference that recomputes everything at every step."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from partition_gen.graph import cells_table_from_points, graph_from_cells_table
from partition_gen.merging import merge_nodes, merge_reference_networkx, node_scores
from sampledata import paths as data_paths

SHARED_DATA = "/work/shared/data/mp16_coordinates_100k.csv"


def _mp16_coordinates(n: int, seed: int = 0):
    """n real MP-16 photo locations (bundled data/ first, else the shared copy)."""
    try:
        path = data_paths.mp16_coordinates()
    except FileNotFoundError:
        path = SHARED_DATA
    data = np.genfromtxt(path, delimiter=",", skip_header=1)
    idx = np.random.default_rng(seed).choice(len(data), n, replace=False)
    return data[idx, 0], data[idx, 1]


@pytest.fixture(scope="module")
def real_graph():
    lat, lng = _mp16_coordinates(6000)
    feats = np.random.default_rng(1).normal(size=(lat.size, 8))
    return graph_from_cells_table(cells_table_from_points(lat, lng, feats))


def _small_graph(n_points=160, dim=6, seed=2):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n_points)))
    lng = rng.uniform(-180, 180, n_points)
    lat = np.r_[lat, lat[:40] + 0.001]  # some cells with several photos
    lng = np.r_[lng, lng[:40]]
    feats = rng.normal(size=(lat.size, dim))
    return graph_from_cells_table(cells_table_from_points(lat, lng, feats), feature_dtype=np.float64)


def _class_graphs_connected(graph, labels):
    g = nx.Graph(map(tuple, graph.edges().tolist()))
    g.add_nodes_from(range(graph.n_nodes))
    return all(
        nx.is_connected(g.subgraph(np.flatnonzero(labels == k).tolist())) for k in range(labels.max() + 1)
    )


@pytest.mark.parametrize(
    "alpha,beta,dims",
    [
        ((1, 0, 0), (1, 0), None),
        ((1, 0, 0), (0, 1), None),
        ((0.5, 0.3, 0.2), (0.4, 0.6), (0, 2, 5)),
        ((0, 1, 0), (0, 1), None),  # all scores tie at first: the node index breaks ties
        ((0.1, 0.1, 0.8), (0.7, 0.3), (1, 3)),
    ],
)
def test_merge_sequence_matches_slow_reference(alpha, beta, dims):
    graph = _small_graph()
    fast = merge_nodes(graph, 12, alpha, beta, dims, record_merges=True)
    slow = merge_reference_networkx(graph, 12, alpha, beta, dims, scan=True)
    assert fast.merges.shape == (graph.n_nodes - 12, 2)
    np.testing.assert_array_equal(fast.merges, slow.merges)
    np.testing.assert_array_equal(fast.labels, slow.labels)


def test_heap_reference_matches_scan_reference():
    graph = _small_graph(seed=9)
    a = merge_reference_networkx(graph, 20, (0.3, 0.3, 0.4), (0.5, 0.5), scan=True)
    b = merge_reference_networkx(graph, 20, (0.3, 0.3, 0.4), (0.5, 0.5), scan=False)
    np.testing.assert_array_equal(a.merges, b.merges)


@pytest.mark.parametrize("beta", [(1, 0), (0, 1), (0.5, 0.5)])
def test_partition_is_exact_contiguous_and_deterministic(real_graph, beta):
    k = 150
    result = merge_nodes(real_graph, k, (1, 0, 0), beta)
    labels = result.labels
    assert labels.shape == (real_graph.n_nodes,) and labels.dtype == np.int32
    assert result.n_classes == k and set(np.unique(labels).tolist()) == set(range(k))  # dense, exact
    assert _class_graphs_connected(real_graph, labels)
    again = merge_nodes(real_graph, k, (1, 0, 0), beta)
    np.testing.assert_array_equal(labels, again.labels)


def test_image_count_balance_with_alpha_images_only(real_graph):
    """Stated bound for α=(1,0,0) on real MP-16 density: every class holds between 0.4x and 4x the mean
    image count, coefficient of variation <= 0.6; a territory-driven score (α=(0,0,1)) is far less balanced."""
    k = 100
    mean = real_graph.n_images.sum() / k
    for beta in [(1, 0), (0, 1)]:
        counts = np.bincount(merge_nodes(real_graph, k, (1, 0, 0), beta).labels, weights=real_graph.n_images)
        assert counts.min() >= 0.4 * mean
        assert counts.max() <= 4.0 * mean
        assert counts.std() / mean <= 0.6
    area = np.bincount(merge_nodes(real_graph, k, (0, 0, 1), (0, 1)).labels, weights=real_graph.n_images)
    assert area.max() > 4.0 * mean or area.min() < 0.4 * mean


def test_visual_and_geographic_sets_differ_on_data_where_they_disagree():
    # Two visual "kinds" of place in a salt-and-pepper pattern unrelated to geography.
    rng = np.random.default_rng(4)
    n = 4000
    lat = np.degrees(np.arcsin(rng.uniform(-0.8, 0.8, n)))
    lng = rng.uniform(-180, 180, n)
    kind = (np.floor(lat * 3) + np.floor(lng * 3)) % 2
    feats = np.c_[kind, 1 - kind] + rng.normal(scale=0.05, size=(n, 2))
    graph = graph_from_cells_table(cells_table_from_points(lat, lng, feats), feature_dtype=np.float64)
    node_kind = graph.features[:, 0] > 0.5
    k = 60
    visual = merge_nodes(graph, k, (1, 0, 0), (1, 0)).labels
    geographic = merge_nodes(graph, k, (1, 0, 0), (0, 1)).labels

    def purity(labels):
        share = np.bincount(labels, weights=node_kind, minlength=k) / np.bincount(labels, minlength=k)
        return float(np.mean(np.maximum(share, 1 - share)))

    assert not np.array_equal(visual, geographic)
    assert purity(visual) > purity(geographic) + 0.1


def test_node_scores_are_normalised_counts(real_graph):
    s = node_scores(real_graph, (0.2, 0.3, 0.5))
    expected = (
        0.2 * real_graph.n_images / real_graph.n_images.sum()
        + 0.3 / real_graph.n_nodes
        + 0.5 * real_graph.n_s2 / real_graph.n_s2.sum()
    )
    np.testing.assert_allclose(s, expected)
    assert s.sum() == pytest.approx(1.0)


def test_impossible_requests_fail_clearly(real_graph):
    with pytest.raises(ValueError, match="between 1 and the number of nodes"):
        merge_nodes(real_graph, real_graph.n_nodes + 1)
    with pytest.raises(ValueError, match="alpha"):
        merge_nodes(real_graph, 10, alpha=(0, 0, 0))
    with pytest.raises(ValueError, match="feature_dims"):
        merge_nodes(real_graph, 10, beta=(1, 0), feature_dims=[0, 99])
    identity = merge_nodes(real_graph, real_graph.n_nodes)
    np.testing.assert_array_equal(identity.labels, np.arange(real_graph.n_nodes))


def test_in_place_merge_gives_the_same_classes():
    graph = _small_graph(seed=11)
    before = graph.features.copy()
    copy_result = merge_nodes(graph, 15, (1, 0, 0), (0.6, 0.4))
    np.testing.assert_array_equal(graph.features, before)  # the default leaves the graph untouched
    in_place = merge_nodes(graph, 15, (1, 0, 0), (0.6, 0.4), in_place=True)
    np.testing.assert_array_equal(copy_result.labels, in_place.labels)


@pytest.mark.parametrize(
    "alpha,beta",
    [
        ((1, 0, 0), (0.5, 0.5)),  # the benchmark's weights; many initial score ties (one photo per cell)
        ((0, 1, 0), (10, 10)),  # every score ties at first; weights up to 30 (no cap on the best weight)
    ],
)
def test_merge_sequence_matches_heap_reference_on_real_graph(real_graph, alpha, beta):
    """The packed-int heap, row gathering with take() and the threaded setup give the reference's exact
    merge sequence on a ~6,000-node real graph (float32 features, 13-bit node field)."""
    fast = merge_nodes(real_graph, 40, alpha, beta, record_merges=True)
    slow = merge_reference_networkx(real_graph, 40, alpha, beta, scan=False)
    np.testing.assert_array_equal(fast.merges, slow.merges)
    np.testing.assert_array_equal(fast.labels, slow.labels)


def test_subspace_features_are_row_major_for_the_per_merge_gathers():
    """A feature subspace (Table 1's random axis-aligned dims) must be gathered from a C-ordered array: NumPy's
    column fancy-indexing returns Fortran order, on which every merge's row gather and gemv crawl (a 68k-node
    set took 300 s instead of 1 s). Checked on the array the merge works on, with its values."""
    from partition_gen.merging import _feature_sums_and_norms

    graph = _small_graph(seed=5)
    dims = np.array([3, 0, 5, 1])
    feat, norms = _feature_sums_and_norms(graph, dims, in_place=False)
    assert feat.flags.c_contiguous
    expected = graph.features[:, dims] * graph.n_images[:, None]
    np.testing.assert_allclose(feat, expected, rtol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(expected.astype(np.float64), axis=1), rtol=1e-5)


@pytest.fixture(scope="module")
def real_graph_50k():
    """All 100,000 bundled MP-16 photo locations: ~67,000 level-14 nodes, float32 16-d features."""
    lat, lng = _mp16_coordinates(100_000)
    feats = np.random.default_rng(3).normal(size=(lat.size, 16))
    graph = graph_from_cells_table(cells_table_from_points(lat, lng, feats))
    assert graph.n_nodes > 50_000
    return graph


@pytest.mark.parametrize(
    "alpha,beta,dims",
    [
        ((1, 0, 0), (0.5, 0.5), None),  # the benchmark's weights
        ((0, 1, 0), (0, 1), None),  # geographic only (squared chords), every score tied at first
        ((0.5, 0.3, 0.2), (0.7, 0.3), (0, 3, 5, 9, 15)),  # a feature subspace, all three count terms
    ],
)
def test_compiled_merge_gives_the_python_loops_merge_sequence_on_a_real_50k_graph(real_graph_50k, alpha, beta, dims):
    """The numba loop (the default engine) against the pure-Python loop it replaced: the same merges in
    the same order, hence the same classes, on a real graph of more than 50,000 nodes."""
    graph = real_graph_50k
    compiled = merge_nodes(graph, 2000, alpha, beta, dims, record_merges=True, engine="numba")
    python = merge_nodes(graph, 2000, alpha, beta, dims, record_merges=True, engine="python")
    np.testing.assert_array_equal(compiled.merges, python.merges)
    np.testing.assert_array_equal(compiled.labels, python.labels)
    assert compiled.n_classes == 2000


def test_compiled_merge_grows_and_compacts_its_adjacency_pool():
    """A few huge classes (every node merges into a growing neighbour) force slot moves and pool
    compactions; the classes must still be the reference's."""
    graph = _small_graph(n_points=900, seed=13)
    for k in (1, 3):
        compiled = merge_nodes(graph, k, (0, 0, 1), (0, 1), record_merges=True, engine="numba")
        slow = merge_reference_networkx(graph, k, (0, 0, 1), (0, 1), scan=False)
        np.testing.assert_array_equal(compiled.merges, slow.merges)


def test_compiled_merge_reports_a_disconnected_graph():
    from dataclasses import replace

    graph = _small_graph(seed=3)
    lonely = replace(graph, indptr=np.zeros(graph.n_nodes + 1, np.int64), indices=np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="disconnected"):
        merge_nodes(lonely, 5, engine="numba")
    with pytest.raises(ValueError, match="engine"):
        merge_nodes(graph, 5, engine="cython")


@pytest.mark.parametrize("dtype,layout", [("float32", "C"), ("float32", "strided"), ("float64", "C")])
def test_compiled_feature_dot_is_the_scalar_reference_bit_for_bit(dtype, layout):
    """The merge kernel's dot product (four float64 partial sums, one SIMD lane each for C-ordered float32
    rows) equals its written-out scalar definition exactly, for every remainder of the dimension mod 4:
    a near-tie between two neighbours' weights must go the same way on every path."""
    from numba import njit

    from partition_gen import _merge_kernel as kernel

    @njit
    def compiled_dot(feat, a, b):
        return kernel._dot(feat, a, b)

    rng = np.random.default_rng(3)
    for dim in (1, 2, 3, 4, 5, 7, 86, 128, 131):
        wide = rng.normal(0, 10, (40, 2 * dim)).astype(dtype)
        feat = wide[:, ::2] if layout == "strided" else np.ascontiguousarray(wide[:, :dim])
        for a, b in rng.integers(0, 40, (25, 2)):
            expected = kernel._dot(feat, a, b)  # the plain Python body
            assert compiled_dot(feat, a, b) == expected, (dim, a, b)
    # The definition's order is not a plain float64 dot's (which rounds otherwise): the check can tell.
    assert any(kernel._dot(feat, a, b) != float(feat[a].astype(np.float64) @ feat[b].astype(np.float64))
               for a, b in rng.integers(0, 40, (200, 2)))
