"""The initial graph of geoclass-set generation (paper Section 3.3; DESIGN.md, "Initial graph").

Nodes are the non-empty S2 cells of the cells table (ascending ``cell_id``). Empty cells are never
enumerated (a level-14 grid has ~1.6e9 cells): every point of the sphere belongs to the node whose cell
centre is nearest, i.e. to its spherical Voronoi territory, so the nodes tile the whole earth, oceans and
poles included. The dual of that Voronoi diagram, the spherical Delaunay triangulation (the convex hull
of the unit vectors), gives the adjacency. ``n_S2`` of a node is its territory measured in level-``level``
cells: round(area / (4π / (6·4^level))), at least 1 (a node always holds its own cell).

Territory areas are computed exactly from the triangulation: the Voronoi region of vertex ``a`` is the fan
of the kites (a, midpoint(a, b), circumcentre(t), midpoint(a, c)) over its triangles t = (a, b, c), with
signed spherical-triangle areas, so obtuse triangles (circumcentre outside) are handled exactly.

Degenerate inputs: a single node owns the sphere; 2 or 3 nodes, or nodes that all lie on one circle, have
lune-shaped territories between the bisecting planes through the circle's axis and are adjacent to their
angular neighbours; a node whose site coincides with another (the hull leaves it out) is joined to its
nearest triangulated node and to that node's neighbours, with a territory of its own cell only.

Pure NumPy/SciPy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.spatial import _qhull as _scipy_qhull

from partition_gen import s2cells
from partition_gen.cells import cells_table_from_points  # noqa: F401  (its home is partition_gen.cells)
from schemas import columns as c
from schemas.tables import CELLS, SchemaError, check_columns, check_no_nulls, validate_cells

log = logging.getLogger(__name__)

FOUR_PI = 4.0 * math.pi


def mean_cell_area(level: int) -> float:
    """Mean area (steradians) of an S2 cell at ``level``: the sphere over 6·4^level cells."""
    return FOUR_PI / (6.0 * 4.0**level)


@dataclass(frozen=True)
class SphericalTriangulation:
    """Adjacency (symmetric CSR, sorted neighbours) and Voronoi territory areas of points on the sphere."""

    indptr: np.ndarray
    indices: np.ndarray
    areas: np.ndarray

    def neighbours(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]


@dataclass(frozen=True)
class InitialGraph:
    """Nodes (non-empty cells) with their counts, centres, mean features, adjacency and territories."""

    cell_ids: np.ndarray  # uint64 (N,), ascending
    level: int
    n_images: np.ndarray  # int64 (N,)
    xyz_sum: np.ndarray  # float64 (N, 3): sum of the images' unit vectors
    features: np.ndarray | None  # (N, D) mean image feature per node, or None when not given
    sites: np.ndarray  # float64 (N, 3) unit vectors that were triangulated (cell centres)
    indptr: np.ndarray  # int64 (N + 1,)
    indices: np.ndarray  # int32 neighbours
    territory_area: np.ndarray  # float64 (N,) steradians
    n_s2: np.ndarray  # int64 (N,) territory in level-``level`` cells

    @property
    def n_nodes(self) -> int:
        return int(self.cell_ids.size)

    @property
    def n_edges(self) -> int:
        return int(self.indices.size // 2)

    @property
    def embedding_dim(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def neighbours(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def edges(self) -> np.ndarray:
        """Undirected edges as an (E, 2) array with a < b."""
        src = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        keep = src < self.indices
        return np.stack([src[keep], self.indices[keep]], axis=1)

    def centres(self) -> np.ndarray:
        """Image-weighted centres as unit vectors (the geographic distance of Eq. 2 uses these)."""
        return _normalise_rows(self.xyz_sum, fallback=self.sites)


def _normalise_rows(v: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    out = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    if fallback is not None:
        empty = norm[:, 0] == 0
        out[empty] = fallback[empty]
    return out


# --------------------------------------------------------------------------------------------------
# Spherical Delaunay triangulation and Voronoi areas


def _signed_triangle_area(a: np.ndarray, b: np.ndarray, c_: np.ndarray) -> np.ndarray:
    """Signed solid angle of spherical triangles (Van Oosterom & Strackee), positive when counter-clockwise."""
    det = np.einsum("ij,ij->i", a, np.cross(b, c_))
    den = 1.0 + np.einsum("ij,ij->i", a, b) + np.einsum("ij,ij->i", b, c_) + np.einsum("ij,ij->i", c_, a)
    return 2.0 * np.arctan2(det, den)


def _csr_from_edges(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = np.concatenate([a, b]).astype(np.int64)
    dst = np.concatenate([b, a]).astype(np.int64)
    keys = src * n + dst
    keys.sort()
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # duplicate edges appear once
    src, dst = keys // n, keys % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst.astype(np.int32)


def _circle_triangulation(points: np.ndarray) -> SphericalTriangulation:
    """Points on one circle (including any 1-3 points): lune territories around the circle's axis."""
    n = len(points)
    if n == 1:
        return SphericalTriangulation(np.zeros(2, np.int64), np.zeros(0, np.int32), np.array([FOUR_PI]))
    centred = points - points.mean(axis=0)
    if n == 2:
        axis = np.cross(points[0], points[1])
        if np.linalg.norm(axis) < 1e-15:  # identical or antipodal: any perpendicular axis will do
            axis = np.cross(points[0], [1.0, 0.0, 0.0] if abs(points[0][0]) < 0.9 else [0.0, 1.0, 0.0])
    else:
        axis = np.linalg.svd(centred)[2][-1]
    axis = axis / np.linalg.norm(axis)
    e1 = points[0] - axis * (points[0] @ axis)
    if np.linalg.norm(e1) < 1e-15:
        e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    angle = np.arctan2(points @ e2, points @ e1) % (2 * math.pi)
    order = np.argsort(angle, kind="stable")
    gaps = np.diff(np.concatenate([angle[order], [angle[order[0]] + 2 * math.pi]]))
    # A lune of dihedral angle θ has area 2θ; each point's lune spans half of each adjacent gap.
    areas = np.empty(n)
    areas[order] = gaps + np.roll(gaps, 1)  # 2 * (gap_after + gap_before) / 2
    nxt = np.roll(order, -1)
    indptr, indices = _csr_from_edges(n, order, nxt)
    return SphericalTriangulation(indptr, indices, areas)


def _on_one_circle(points: np.ndarray) -> bool:
    if len(points) < 4:
        return True
    centred = points - points.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    return bool(singular[-1] <= 1e-12 * max(singular[0], 1e-300))


def _hull_facets(points: np.ndarray, options: str) -> tuple[np.ndarray, np.ndarray]:
    """Triangular facets (indices) and facet planes of the convex hull, as ``ConvexHull`` gives them.

    ``ConvexHull`` makes the same Qhull calls and then also sums the hull's volume and area, a pass over
    all facets this module never reads (~2 s for 2.8M points); the private ``_Qhull`` skips it. Should a
    SciPy release lack it, ``ConvexHull`` itself is used.
    """
    qhull_class = getattr(_scipy_qhull, "_Qhull", None)
    if qhull_class is None:
        hull = ConvexHull(points, qhull_options=options)
        return hull.simplices, hull.equations
    qhull = qhull_class(b"i", points, options.encode(), required_options=b"Qt")
    try:
        qhull.triangulate()
        simplices, _, equations, _, _ = qhull.get_simplex_facet_array()
    finally:
        qhull.close()
    return simplices, equations


def triangulate_sphere(points: np.ndarray) -> SphericalTriangulation:
    """Spherical Delaunay adjacency and exact Voronoi territory areas of unit vectors ``points`` (N, 3)."""
    points = np.ascontiguousarray(points, dtype=np.float64)
    n = len(points)
    if n == 0:
        raise ValueError("cannot triangulate an empty set of points")
    if _on_one_circle(points):
        return _circle_triangulation(points)
    try:
        # Q5 skips Qhull's closing pass that measures how far any point lies outside the final facets
        # (``max_outside``): facets, equations and vertices are the same, ~15% sooner.
        simplices, equations = _hull_facets(points, "Q5")
    except QhullError:
        simplices, equations = _hull_facets(points, "QJ")  # near-degenerate input: joggle
    kernel = _kernel()
    if kernel is not None:
        tri, indptr, indices, areas = _compiled_triangle_passes(kernel, points, simplices, equations)
    else:
        tri, indptr, indices, areas = _numpy_triangle_passes(points, simplices, equations)
    # A territory larger than a hemisphere comes out modulo 4π from the signed fan.
    areas = np.mod(areas, FOUR_PI)

    on_hull = np.diff(indptr) > 0  # a vertex of some triangle (hull.vertices would sort all simplices)
    missing = np.flatnonzero(~on_hull)
    if missing.size:
        indptr, indices = _attach_missing(points, np.flatnonzero(on_hull), missing, indptr, indices)
        areas[missing] = 0.0
        log.warning(
            "%d node(s) coincide with another node's site; joined to their nearest node", missing.size
        )
    return SphericalTriangulation(indptr, indices, areas)


def _kernel():
    """The compiled triangle passes (``partition_gen._graph_kernel``), or None when numba is missing."""
    try:
        from partition_gen import _graph_kernel
    except ImportError:  # the NumPy passes give the same graph, a few times slower
        return None
    return _graph_kernel


def _compiled_triangle_passes(kernel, points, simplices, equations):
    """Oriented triangles, adjacency and (unreduced) territory areas with the compiled kernels; the areas
    run on a second thread (both release the GIL) while this one builds the adjacency."""
    tri, centre = kernel.orient(points, np.ascontiguousarray(simplices), np.ascontiguousarray(equations))
    with ThreadPoolExecutor(max_workers=1) as pool:
        areas_job = pool.submit(kernel.voronoi_areas, points, tri, centre)
        indptr, indices, ok = kernel.oriented_csr(len(points), tri)
        areas = areas_job.result()
    if not ok:  # a repeated directed edge: symmetrise explicitly
        indptr, indices = _csr_from_edges(len(points), tri.ravel(), tri[:, [1, 2, 0]].ravel())
    return tri, indptr, indices, areas


def _numpy_triangle_passes(points, simplices, equations):
    """The same as ``_compiled_triangle_passes`` in NumPy (the fallback without numba, and the reference)."""
    n = len(points)
    tri = simplices.astype(np.int64)
    normals = equations[:, :3]
    # Orient every facet counter-clockwise seen from outside; its circumcentre on the sphere is then the
    # outward normal (the centre of the facet's empty cap).
    a, b, cc = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, cc - a), normals) < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    centre = normals / np.linalg.norm(normals, axis=1, keepdims=True)

    # Territories and adjacency are independent NumPy work that mostly runs without the GIL: the areas go
    # to a second thread (a second core when there is one) while this one builds the adjacency.
    # Each corner k of the triangles adds one fan part to the areas; the parts are summed in the order
    # k = 0, 1, 2 whichever thread computed them, so the sums are those of one sequential loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        first_parts = [pool.submit(_voronoi_area_part, points, tri, centre, k) for k in (0, 1)]
        indptr, indices = _csr_from_oriented_triangles(n, tri)
        last_part = _voronoi_area_part(points, tri, centre, 2)
        areas = np.zeros(n)
        for part in [job.result() for job in first_parts] + [last_part]:
            areas += part
    return tri, indptr, indices, areas


def _voronoi_area_part(points: np.ndarray, tri: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """Corner ``k``'s share of each vertex's Voronoi territory: for every counter-clockwise triangle, the
    kite (vertex, midpoint to the next vertex, circumcentre, midpoint to the previous vertex) at corner k."""
    v0, v1, v2 = tri[:, k], tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
    p0, p1, p2 = points[v0], points[v1], points[v2]
    m01 = _normalise_rows(p0 + p1)
    m20 = _normalise_rows(p2 + p0)
    part = _signed_triangle_area(p0, m01, centre) + _signed_triangle_area(p0, centre, m20)
    return np.bincount(v0, weights=part, minlength=len(points))


def _csr_from_oriented_triangles(n: int, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric adjacency of a closed triangulation whose triangles all turn the same way.

    There every edge lies in two triangles that run along it in opposite directions, so the 3T directed
    edges (a→b, b→c, c→a) are distinct and already hold both directions of each edge: half the keys of
    symmetrising them. Should any directed edge repeat (an inconsistently oriented, near-flat facet), the
    premise fails and the edges are symmetrised explicitly.
    """
    src = tri.ravel()
    dst = tri[:, [1, 2, 0]].ravel()
    keys = src * n + dst
    keys.sort()
    if keys.size and (keys[1:] == keys[:-1]).any():
        return _csr_from_edges(n, src, dst)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n, minlength=n), out=indptr[1:])
    return indptr, (keys % n).astype(np.int32)


def _attach_missing(points, vertices, missing, indptr, indices):
    """Join each node the hull left out (a duplicate site) to its nearest hull vertex and its neighbours."""
    n = len(points)
    _, nearest = cKDTree(points[vertices]).query(points[missing])
    host = vertices[nearest]
    src, dst = [], []
    for m, h in zip(missing.tolist(), host.tolist()):
        around = indices[indptr[h] : indptr[h + 1]]
        src.append(np.full(around.size + 1, m))
        dst.append(np.concatenate([[h], around]))
    base_src = np.repeat(np.arange(n), np.diff(indptr))
    return _csr_from_edges(
        n, np.concatenate([base_src] + src), np.concatenate([indices.astype(np.int64)] + dst)
    )


# --------------------------------------------------------------------------------------------------
# Building the graph


def _cell_centres(cell_ids: np.ndarray, chunk: int = 250_000) -> np.ndarray:
    """``s2cells.cell_center_xyz`` in chunks over two threads: its temporaries then stay in cache, and NumPy
    runs the chunks without the GIL. Row for row the same values (the function is elementwise)."""
    if cell_ids.size <= chunk:
        return s2cells.cell_center_xyz(cell_ids)
    parts = np.array_split(cell_ids, -(-cell_ids.size // chunk))
    with ThreadPoolExecutor(max_workers=2) as pool:
        return np.concatenate(list(pool.map(s2cells.cell_center_xyz, parts)))


def build_initial_graph(
    cell_ids,
    n_images,
    xyz_sum,
    feature_sum=None,
    *,
    level: int = 14,
    feature_dtype=np.float32,
    feature_mean: np.ndarray | None = None,
    sites: np.ndarray | None = None,
) -> InitialGraph:
    """The initial graph of non-empty cells; rows are reordered to ascending ``cell_id``.

    ``feature_sum`` (N, D) holds per-cell sums of image features; the graph keeps the mean feature per
    node in ``feature_dtype`` (float32 halves the memory of a 2.8M-node graph). Callers that already hold
    the means pass ``feature_mean`` instead; it is used without a copy when its rows are already in
    ascending ``cell_id`` order and of ``feature_dtype``. ``sites`` overrides the
    triangulated points (default: the S2 cell centres, which are distinct and evenly spaced, unlike
    image-weighted centres that can nearly coincide across a cell edge).
    """
    cell_ids = np.asarray(cell_ids, dtype=np.uint64).ravel()
    n = cell_ids.size
    n_images = np.asarray(n_images, dtype=np.int64).ravel()
    xyz_sum = np.asarray(xyz_sum, dtype=np.float64).reshape(-1, 3)
    if n == 0:
        raise ValueError("cells table is empty: an initial graph needs at least one non-empty cell")
    if n_images.size != n or len(xyz_sum) != n:
        raise ValueError(f"cells: {n} cell ids but {n_images.size} counts and {len(xyz_sum)} xyz sums")
    if (n_images <= 0).any():
        i = int(np.argmax(n_images <= 0))
        raise ValueError(
            f"cells: cell {int(cell_ids[i])} has n_images={int(n_images[i])}; nodes must be non-empty"
        )
    if not np.isfinite(xyz_sum).all():
        raise ValueError("cells: xyz sums hold NaN or inf")
    already_sorted = n < 2 or bool((cell_ids[1:] > cell_ids[:-1]).all())
    order = slice(None) if already_sorted else np.argsort(cell_ids, kind="stable")
    cell_ids, n_images, xyz_sum = cell_ids[order], n_images[order], xyz_sum[order]
    if n > 1 and (np.diff(cell_ids) == 0).any():
        raise ValueError(f"cells: duplicate cell_id {int(cell_ids[np.argmax(np.diff(cell_ids) == 0)])}")
    levels = s2cells.cell_levels(cell_ids)
    if (levels != level).any():
        bad = int(np.argmax(levels != level))
        raise ValueError(f"cells: cell {int(cell_ids[bad])} is at level {int(levels[bad])}, expected {level}")

    if feature_sum is not None and feature_mean is not None:
        raise ValueError("give feature_sum or feature_mean, not both")
    for label, given in (("sums", feature_sum), ("means", feature_mean)):
        if given is not None and (np.ndim(given) != 2 or len(given) != n):
            raise ValueError(f"cells: feature {label} have shape {np.shape(given)}, expected ({n}, D)")
    if sites is None:
        sites = _cell_centres(cell_ids)
    else:
        sites = np.asarray(sites, dtype=np.float64)[order]
    sites = _normalise_rows(np.asarray(sites, dtype=np.float64))
    started = time.perf_counter()
    tri = triangulate_sphere(sites)
    log.info(
        "initial graph: %d nodes, %d edges, triangulated in %.1f s",
        n,
        tri.indices.size // 2,
        time.perf_counter() - started,
    )
    n_s2 = np.maximum(1, np.rint(tri.areas / mean_cell_area(level))).astype(np.int64)
    # Features after the hull: Qhull's working memory is freed before the N×D array exists.
    features = None
    if feature_mean is not None:
        features = np.asarray(feature_mean)[order].astype(feature_dtype, copy=False)
    if feature_sum is not None:
        feature_sum = np.asarray(feature_sum)
        features = np.empty(feature_sum.shape, dtype=feature_dtype)
        np.divide(feature_sum[order], n_images[:, None], out=features, casting="unsafe")
        if not np.isfinite(features).all():
            raise ValueError("cells: feature sums hold NaN or inf")

    return InitialGraph(
        cell_ids=cell_ids,
        level=level,
        n_images=n_images,
        xyz_sum=xyz_sum,
        features=features,
        sites=sites,
        indptr=tri.indptr,
        indices=tri.indices,
        territory_area=tri.areas,
        n_s2=n_s2,
    )


def with_feature_means(
    graph: InitialGraph, feature_mean: np.ndarray, feature_dtype=np.float32
) -> InitialGraph:
    """The same graph with per-node mean features (rows in the graph's ascending ``cell_id`` order)."""
    feature_mean = np.asarray(feature_mean)
    if feature_mean.ndim != 2 or len(feature_mean) != graph.n_nodes:
        raise ValueError(f"feature means have shape {feature_mean.shape}, expected ({graph.n_nodes}, D)")
    return replace(graph, features=feature_mean.astype(feature_dtype, copy=False))


def graph_from_cells_table(
    table: pa.Table, *, with_features: bool = True, feature_dtype=np.float32
) -> InitialGraph:
    """The initial graph of a cells artifact (``schemas.CELLS``), validated at the door.

    Without features the table may lack the ``feature_sum`` column (a reader that streams it later).
    """
    if with_features or c.FEATURE_SUM in table.column_names:
        validate_cells(table)
    else:
        node_columns = [name for name in CELLS.names if name != c.FEATURE_SUM]
        check_columns("cells", table.schema, CELLS, required=node_columns)
        check_no_nulls("cells", table, CELLS)
    if table.num_rows == 0:
        raise SchemaError("cells: the table has no rows")
    levels = np.unique(table.column(c.LEVEL).to_numpy(zero_copy_only=False))
    if levels.size != 1:
        raise SchemaError(f"cells: column '{c.LEVEL}' mixes levels {levels.tolist()}; one level per graph")
    xyz = np.stack(
        [table.column(k).to_numpy(zero_copy_only=False) for k in (c.X_SUM, c.Y_SUM, c.Z_SUM)], axis=1
    )
    feature_sum = None
    if with_features:
        feature_sum = feature_matrix(table.column(c.FEATURE_SUM))
    return build_initial_graph(
        table.column(c.CELL_ID).to_numpy(zero_copy_only=False),
        table.column(c.N_IMAGES).to_numpy(zero_copy_only=False),
        xyz,
        feature_sum,
        level=int(levels[0]),
        feature_dtype=feature_dtype,
    )


def with_streamed_feature_means(
    graph: InitialGraph, batches: Iterable[pa.RecordBatch | pa.Table], feature_dtype=np.float32
) -> InitialGraph:
    """The graph with per-node mean features from cells-table batches (``cell_id``, ``n_images``,
    ``feature_sum``) in any order, one batch at a time.

    Lets a reader build the hull from the small node columns first and stream the N×D float64 sums
    afterwards, so the whole sums column (2.9 GB for 2.8M nodes × 128) is never in memory next to Qhull.
    The means are those of ``graph_from_cells_table``: float64 sum / n_images, rounded to ``feature_dtype``.
    """
    features = None
    seen = np.zeros(graph.n_nodes, dtype=bool)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ids = batch.column(c.CELL_ID).to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
        rows = np.searchsorted(graph.cell_ids, ids)
        rows = np.minimum(rows, graph.n_nodes - 1)
        if not np.array_equal(graph.cell_ids[rows], ids) or seen[rows].any():
            raise SchemaError("cells: the feature rows do not match the graph's cells (unknown or repeated cell_id)")
        seen[rows] = True
        sums = feature_matrix(batch.column(c.FEATURE_SUM))
        if features is None:
            features = np.empty((graph.n_nodes, sums.shape[1]), dtype=feature_dtype)
        elif sums.shape[1] != features.shape[1]:
            raise SchemaError(
                f"cells: column '{c.FEATURE_SUM}' has length {sums.shape[1]}, expected {features.shape[1]}"
            )
        block = np.empty(sums.shape, dtype=feature_dtype)
        np.divide(sums, graph.n_images[rows][:, None], out=block, casting="unsafe")
        if not np.isfinite(block).all():
            raise ValueError("cells: feature sums hold NaN or inf")
        features[rows] = block
    if features is None or not seen.all():
        raise SchemaError(f"cells: {int((~seen).sum())} of {graph.n_nodes} cells have no feature row")
    return replace(graph, features=features)


def feature_matrix(column: pa.ChunkedArray) -> np.ndarray:
    """An (N, D) float64 matrix from a list column, refusing ragged rows with a clear error."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        raise SchemaError(f"cells: column '{c.FEATURE_SUM}' has {arr.null_count} null rows")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != lengths[0]).any():
        i = int(np.argmax(lengths != lengths[0]))
        raise SchemaError(
            f"cells: column '{c.FEATURE_SUM}' has length {int(lengths[i])} at row {i}, expected {int(lengths[0])}"
        )
    dim = int(lengths[0]) if lengths.size else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False).reshape(len(arr), dim)
