"""Initial graph: Delaunay adjacency and Voronoi territories against scipy's SphericalVoronoi, whole-earth
coverage, degenerate inputs, and validation of the cells table."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from scipy.spatial import SphericalVoronoi

from partition_gen import s2cells
from partition_gen.graph import (
    build_initial_graph,
    cells_table_from_points,
    graph_from_cells_table,
    mean_cell_area,
    triangulate_sphere,
    with_feature_means,
)
from schemas.tables import SchemaError


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _voronoi_neighbours(points):
    """Independent adjacency: two sites are neighbours when their SphericalVoronoi regions share a vertex pair."""
    sv = SphericalVoronoi(points)
    sv.sort_vertices_of_regions()
    edges = set()
    owners = {}
    for i, region in enumerate(sv.regions):
        for a, b in zip(region, region[1:] + region[:1]):
            owners.setdefault(frozenset((a, b)), []).append(i)
    for pair in owners.values():
        if len(pair) == 2:
            edges.add(tuple(sorted(pair)))
    return edges, sv.calculate_areas()


@pytest.mark.parametrize("kind", ["global", "cap", "northern_hemisphere"])
def test_territories_and_adjacency_match_spherical_voronoi(kind):
    rng = np.random.default_rng(3)
    if kind == "global":
        p = _unit(rng.normal(size=(800, 3)))
    elif kind == "cap":  # all points within ~20° of the north pole: one territory is most of the sphere
        p = _unit(np.c_[rng.normal(size=(300, 2)) * 0.2, np.ones(300)])
    else:
        p = _unit(rng.normal(size=(500, 3)))
        p[:, 2] = np.abs(p[:, 2])
    tri = triangulate_sphere(p)
    edges_ref, areas_ref = _voronoi_neighbours(p)
    np.testing.assert_allclose(tri.areas, areas_ref, rtol=1e-9, atol=1e-12)
    assert tri.areas.sum() == pytest.approx(4 * math.pi, rel=1e-12)
    ours = {(i, int(j)) for i in range(len(p)) for j in tri.neighbours(i) if i < j}
    assert ours == edges_ref


def test_adjacency_is_symmetric_and_sorted():
    p = _unit(np.random.default_rng(1).normal(size=(300, 3)))
    tri = triangulate_sphere(p)
    for i in range(len(p)):
        nb = tri.neighbours(i)
        assert np.all(np.diff(nb) > 0) and i not in nb
        for j in nb:
            assert i in tri.neighbours(j)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fewer_than_four_nodes_cover_the_sphere(n):
    p = _unit(np.random.default_rng(n).normal(size=(n, 3)))
    tri = triangulate_sphere(p)
    assert tri.areas.sum() == pytest.approx(4 * math.pi)
    expected_edges = {1: 0, 2: 1, 3: 3}[n]
    assert tri.indices.size // 2 == expected_edges


def test_two_nodes_split_the_sphere_into_hemispheres():
    tri = triangulate_sphere(_unit(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    np.testing.assert_allclose(tri.areas, [2 * math.pi, 2 * math.pi])


def test_points_on_one_circle_get_lunes_between_bisectors():
    # Six points on the equator at uneven longitudes: lune area = 2 x dihedral angle.
    lng = np.radians([0.0, 30.0, 100.0, 180.0, 250.0, 300.0])
    p = np.c_[np.cos(lng), np.sin(lng), np.zeros_like(lng)]
    tri = triangulate_sphere(p)
    gaps = np.diff(np.r_[lng, lng[0] + 2 * math.pi])
    expected = gaps + np.roll(gaps, 1)  # 2 * (half gap before + half gap after)
    np.testing.assert_allclose(tri.areas, expected)
    g = nx.Graph([(i, int(j)) for i in range(6) for j in tri.neighbours(i)])
    assert nx.is_isomorphic(g, nx.cycle_graph(6))


def test_duplicate_site_is_joined_to_its_twin_and_graph_stays_connected():
    rng = np.random.default_rng(5)
    p = _unit(rng.normal(size=(200, 3)))
    p = np.vstack([p, p[17]])
    tri = triangulate_sphere(p)
    assert 17 in tri.neighbours(200)
    g = nx.Graph([(i, int(j)) for i in range(len(p)) for j in tri.neighbours(i)])
    assert nx.is_connected(g) and g.number_of_nodes() == len(p)


def _sample_cells(n_points=3000, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n_points)))
    lng = rng.uniform(-180, 180, n_points)
    return cells_table_from_points(lat, lng, rng.normal(size=(n_points, dim)))


def test_graph_from_cells_covers_whole_earth_in_level14_cells():
    table = _sample_cells()
    g = graph_from_cells_table(table, feature_dtype=np.float64)
    assert np.all(np.diff(g.cell_ids.astype(np.int64)) > 0)
    # Territories tile the sphere: their total is the whole level-14 grid (rounding per node aside).
    assert abs(int(g.n_s2.sum()) - 6 * 4**14) <= g.n_nodes
    assert g.territory_area.sum() == pytest.approx(4 * math.pi, rel=1e-12)
    graph = nx.Graph(map(tuple, g.edges().tolist()))
    assert nx.is_connected(graph) and graph.number_of_nodes() == g.n_nodes
    # Sites are the S2 cell centres, and each node's mean feature is feature_sum / n_images.
    np.testing.assert_allclose(g.sites, s2cells.cell_center_xyz(g.cell_ids), atol=1e-15)
    fs = np.asarray(table.column("feature_sum").to_pylist())
    order = np.argsort(table.column("cell_id").to_numpy())
    counts = table.column("n_images").to_numpy()[order]
    np.testing.assert_allclose(g.features, fs[order] / counts[:, None])
    assert mean_cell_area(14) * 6 * 4**14 == pytest.approx(4 * math.pi)


def test_bad_cells_are_refused_with_a_clear_message():
    ids = s2cells.latlng_to_cell_ids(np.array([10.0, 20.0]), np.array([5.0, 6.0]), 14)
    xyz = s2cells.cell_center_xyz(ids)
    with pytest.raises(ValueError, match="n_images=0"):
        build_initial_graph(ids, [3, 0], xyz)
    with pytest.raises(ValueError, match="duplicate cell_id"):
        build_initial_graph(np.r_[ids, ids[:1]], [1, 1, 1], np.r_[xyz, xyz[:1]])
    with pytest.raises(ValueError, match="level 13, expected 14"):
        build_initial_graph(s2cells.parent_cell_ids(ids, 13), [1, 1], xyz)
    with pytest.raises(ValueError, match="empty"):
        build_initial_graph(np.zeros(0, np.uint64), [], np.zeros((0, 3)))
    table = _sample_cells(50)
    with pytest.raises(SchemaError, match="feature_sum"):
        graph_from_cells_table(table.drop_columns(["feature_sum"]))


def test_row_order_of_the_cells_table_does_not_matter():
    table = _sample_cells(800, seed=4)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    a = graph_from_cells_table(table, feature_dtype=np.float64)
    b = graph_from_cells_table(shuffled, feature_dtype=np.float64)
    for field in ("cell_ids", "n_images", "xyz_sum", "features", "indptr", "indices", "n_s2"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_feature_means_can_join_after_the_hull():
    table = _sample_cells(500, seed=6)
    full = graph_from_cells_table(table, feature_dtype=np.float64)
    bare = graph_from_cells_table(table, with_features=False)
    assert bare.features is None and bare.embedding_dim == 0
    joined = with_feature_means(bare, full.features, feature_dtype=np.float64)
    np.testing.assert_array_equal(joined.features, full.features)
    np.testing.assert_array_equal(joined.indices, full.indices)
    with pytest.raises(ValueError, match="expected"):
        with_feature_means(bare, full.features[:-1])


def _symmetric_adjacency_reference(n, triangles):
    """Plain networkx adjacency of the triangles' edges, as sorted neighbour lists."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for a, b, c_ in triangles.tolist():
        g.add_edges_from([(a, b), (b, c_), (c_, a)])
    return [sorted(g.neighbors(i)) for i in range(n)]


@pytest.mark.parametrize("flip_one", [False, True])
def test_adjacency_from_oriented_triangles_matches_symmetrised_edges(flip_one):
    """The half-size CSR of oriented triangles (and its fallback when one triangle is flipped) is the
    symmetric adjacency, here of a default-options Qhull hull oriented independently."""
    from scipy.spatial import ConvexHull

    from partition_gen.graph import _csr_from_oriented_triangles

    p = _unit(np.random.default_rng(11).normal(size=(500, 3)))
    hull = ConvexHull(p)
    tri = hull.simplices.copy()
    a, b, c_ = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    clockwise = np.einsum("ij,ij->i", np.cross(b - a, c_ - a), a + b + c_) < 0
    tri[clockwise] = tri[clockwise][:, [0, 2, 1]]
    if flip_one:
        tri[0] = tri[0, [0, 2, 1]]
    indptr, indices = _csr_from_oriented_triangles(len(p), tri.astype(np.int64))
    got = [indices[indptr[i] : indptr[i + 1]].tolist() for i in range(len(p))]
    assert got == _symmetric_adjacency_reference(len(p), hull.simplices)


def test_triangulation_equals_default_qhull_options_on_s2_cell_centres():
    """Qhull option Q5 (skip the max_outside pass) must not change the hull: same adjacency as a
    default-options hull, on near-cocircular S2 cell centres."""
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(4)
    ids = np.unique(s2cells.latlng_to_cell_ids(rng.uniform(40, 41, 3000), rng.uniform(10, 11, 3000), 14))
    p = _unit(np.concatenate([s2cells.cell_center_xyz(ids), rng.normal(size=(200, 3))]))
    tri = triangulate_sphere(p)
    got = [tri.neighbours(i).tolist() for i in range(len(p))]
    assert got == _symmetric_adjacency_reference(len(p), ConvexHull(p).simplices)


@pytest.mark.parametrize("options", ["Q5", "QJ"])
def test_hull_facets_are_those_of_convexhull(options):
    """The direct Qhull call gives ConvexHull's simplices and facet planes bit for bit."""
    from scipy.spatial import ConvexHull

    from partition_gen.graph import _hull_facets

    p = _unit(np.random.default_rng(7).normal(size=(3000, 3)))
    simplices, equations = _hull_facets(p, options)
    hull = ConvexHull(p, qhull_options=options)
    assert np.array_equal(simplices, hull.simplices) and np.array_equal(equations, hull.equations)


def test_chunked_cell_centres_equal_one_call():
    from partition_gen.graph import _cell_centres

    rng = np.random.default_rng(9)
    ids = np.unique(s2cells.latlng_to_cell_ids(rng.uniform(-90, 90, 5000), rng.uniform(-180, 180, 5000), 14))
    assert np.array_equal(_cell_centres(ids, chunk=700), s2cells.cell_center_xyz(ids))


def _mp16_cell_centres(n_photos: int = 30_000):
    from sampledata import paths as data_paths

    data = np.genfromtxt(data_paths.mp16_coordinates(), delimiter=",", skip_header=1)[:n_photos]
    ids = np.unique(s2cells.latlng_to_cell_ids(data[:, 0], data[:, 1], 14))
    return _unit(s2cells.cell_center_xyz(ids))


def test_compiled_triangle_passes_equal_the_numpy_passes_on_real_cells():
    """numba's one-pass orientation, territories and adjacency against the NumPy passes (the fallback):
    identical triangles and adjacency, areas equal to rounding, so every n_S2 count is the same."""
    from partition_gen.graph import _compiled_triangle_passes, _hull_facets, _kernel, _numpy_triangle_passes

    points = _mp16_cell_centres()
    simplices, equations = _hull_facets(points, "Q5")
    compiled = _compiled_triangle_passes(_kernel(), points, simplices, equations)
    reference = _numpy_triangle_passes(points, simplices, equations)
    for got, want in zip(compiled[:3], reference[:3]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(compiled[3], reference[3], rtol=1e-12, atol=1e-18)
    cell = mean_cell_area(14)
    np.testing.assert_array_equal(np.rint(compiled[3] / cell), np.rint(reference[3] / cell))


def test_streamed_feature_means_equal_the_whole_table_ones(tmp_path):
    """The Beam job builds the hull from the node columns and streams the feature sums afterwards, in any
    row order and file split: the same float32 means as reading the whole table."""
    import pyarrow.parquet as pq

    from partition_gen.graph import with_streamed_feature_means
    from pipelines.generate_geoclass_sets import load_graph

    rng = np.random.default_rng(8)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000)))
    lng = rng.uniform(-180, 180, 3000)
    table = cells_table_from_points(np.r_[lat, lat[:500]], np.r_[lng, lng[:500]], rng.normal(size=(3500, 6)))
    table = table.take(rng.permutation(table.num_rows))
    pq.write_table(table.slice(0, 1000), tmp_path / "part-0.parquet", row_group_size=300)
    pq.write_table(table.slice(1000), tmp_path / "part-1.parquet", row_group_size=700)
    (tmp_path / "_SUCCESS").write_text("")
    whole = graph_from_cells_table(table)
    streamed = load_graph(str(tmp_path), with_features=True)
    np.testing.assert_array_equal(streamed.features, whole.features)
    np.testing.assert_array_equal(streamed.indices, whole.indices)
    assert load_graph(str(tmp_path), with_features=False).features is None

    bare = graph_from_cells_table(table, with_features=False)
    with pytest.raises(SchemaError, match="no feature row"):
        with_streamed_feature_means(bare, [table.slice(0, 10)])
    with pytest.raises(SchemaError, match="do not match"):
        with_streamed_feature_means(bare, [table.slice(0, 10), table.slice(5, 10)])
