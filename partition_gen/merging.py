"""Greedy merging of the initial graph into an exact number of geoclasses (paper Section 3.3, Eq. 1-2).

Node score (Eq. 1) ``ω = α1·n_img/ΣN_img + α2·n_S2+/ΣN_S2+ + α3·n_S2/ΣN_S2``: each count is divided by its
total over all nodes (DESIGN.md), so the three terms live on one scale. Counts are kept as integers per
merged node and the score is recomputed from them, so a score never depends on the order of float sums.

Edge weight (Eq. 2) ``ν = β1·dist_vis + β2·dist_geo``: ``dist_vis`` = 1 − cosine similarity of the nodes'
mean features restricted to the set's feature dimensions (a zero feature has similarity 0), ``dist_geo`` =
great-circle angle between the image-weighted centres / π. Both are in [0, 1].

Merging: repeatedly take the alive node with the lowest score and merge it into its neighbour with the
smallest edge weight; the merged node keeps the neighbour's index, its counts are the sums, its feature the
image-weighted mean (kept as a sum: cosine similarity does not care about scale), its centre the
normalised xyz sum and its neighbours the union. Ties are broken deterministically: lowest (score, node
index) first, then smallest (weight, neighbour index). Merging stops at exactly ``n_classes`` nodes.

Data structures: a binary heap of (score, node) (packed into one int) with lazy invalidation (an entry is stale when its node
is dead or its score changed; scores only grow), a NumPy array of feature sums, typed arrays for the
per-node scalars, duplicate-free Python lists for the live adjacency (planar, so short on average) updated
in place, and a parent-pointer forest resolved at the end. Pure NumPy; no Beam or TensorFlow here.
"""

from __future__ import annotations

import functools
import gc
import heapq
import logging
import math
from array import array
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from partition_gen.graph import InitialGraph

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1 << 14


@dataclass(frozen=True)
class MergeResult:
    """Dense class ids (0..K-1, ordered by the smallest node index of each class) and the merge log."""

    labels: np.ndarray  # int32 (N,)
    n_classes: int
    merges: np.ndarray | None  # (N - K, 2) int64 rows (merged node, into node), when recorded


def _normalised_weights(values: Sequence[float], size: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != size or any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"{name} must be {size} non-negative numbers with a positive sum, got {values}")
    return values


def node_scores(graph: InitialGraph, alpha: Sequence[float]) -> np.ndarray:
    """Eq. 1 per initial node, with each count divided by its total over all nodes."""
    a1, a2, a3 = _normalised_weights(alpha, 3, "alpha")
    return _score_from_counts(graph.n_images, np.ones(graph.n_nodes, np.int64), graph.n_s2, a1, a2, a3, graph)


def _score_from_counts(img, plus, s2, a1, a2, a3, graph: InitialGraph):
    t1, t2, t3 = float(graph.n_images.sum()), float(graph.n_nodes), float(graph.n_s2.sum())
    return a1 * (img / t1) + a2 * (plus / t2) + a3 * (s2 / t3)


def _without_cyclic_gc(func):
    """Run ``func`` with the cyclic garbage collector paused.

    Merging allocates millions of container objects (adjacency lists, heap tuples) and makes no reference
    cycles; left on, the collector keeps re-traversing them and takes more than half of the time spent
    building the adjacency of a large graph.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


def merge_nodes(
    graph: InitialGraph,
    n_classes: int,
    alpha: Sequence[float] = (1.0, 0.0, 0.0),
    beta: Sequence[float] = (1.0, 0.0),
    feature_dims: Sequence[int] | None = None,
    *,
    record_merges: bool = False,
    progress: bool = False,
    name: str = "",
    in_place: bool = False,
    engine: str = "auto",
) -> MergeResult:
    """Greedily merge the initial graph's nodes into exactly ``n_classes`` connected geoclasses.

    ``in_place`` works on the graph's own feature array instead of a copy (saves N×D values, e.g. 1.4 GB
    for 2.8M nodes × 128 float32) and leaves the graph's features unusable: for one-set-per-graph runs.
    ``engine``: ``"numba"`` (the compiled loop of ``partition_gen._merge_kernel``), ``"python"`` (the
    pure-Python loop, the reference the compiled one is tested against) or ``"auto"`` (numba when installed).
    """
    if engine not in ("auto", "numba", "python"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'python', got {engine!r}")
    if engine == "auto":
        engine = "numba" if _kernel() is not None else "python"
    run = _merge_numba if engine == "numba" else _merge_python
    return run(graph, n_classes, alpha, beta, feature_dims, record_merges, progress, name, in_place)


def _kernel():
    """The compiled merge loop's module, or None when numba is not installed."""
    try:
        from partition_gen import _merge_kernel
    except ImportError:  # numba missing: the Python loop (same rule, ~5x the CPU time)
        return None
    return _merge_kernel


def _checked_request(graph: InitialGraph, n_classes, alpha, beta):
    n = graph.n_nodes
    a = _normalised_weights(alpha, 3, "alpha")
    b = _normalised_weights(beta, 2, "beta")
    if not 1 <= int(n_classes) <= n:
        raise ValueError(f"n_classes={n_classes} must be between 1 and the number of nodes ({n})")
    if b[0] > 0 and graph.features is None:
        raise ValueError("beta1 > 0 needs visual features, but the graph was built without features")
    return int(n_classes), a, b


def _merge_numba(graph, n_classes, alpha, beta, feature_dims, record_merges, progress, name, in_place):
    """The merge with the compiled loop; setup and labels in NumPy, the loop in ``_merge_kernel``."""
    kernel = _kernel()
    if kernel is None:
        raise ImportError("engine='numba' needs the numba package (pip install numba)")
    n = graph.n_nodes
    n_classes, (a1, a2, a3), (b1, b2) = _checked_request(graph, n_classes, alpha, beta)
    t1, t2, t3 = float(graph.n_images.sum()), float(n), float(graph.n_s2.sum())
    feat = np.zeros((1, 1), np.float32)
    norms = np.zeros(1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Feature sums and norms on the other core while this one sets up the heap and adjacency pool.
        if b1 > 0:
            dims = None if feature_dims is None else _checked_dims(feature_dims, graph)
            features_job = pool.submit(_feature_sums_and_norms, graph, dims, in_place)
        img = graph.n_images.astype(np.int64)  # copies: the loop updates them
        plus = np.ones(n, dtype=np.int64)
        s2 = graph.n_s2.astype(np.int64)
        score = a1 * (graph.n_images / t1) + a2 * (1 / t2) + a3 * (graph.n_s2 / t3)
        to_do = n - n_classes
        heap_s = np.empty(n + to_do + 1)
        heap_n = np.empty(n + to_do + 1, dtype=np.int64)
        heap_s[:n] = score
        heap_n[:n] = np.arange(n)
        kernel.heapify(heap_s, heap_n, n)
        degree = np.diff(graph.indptr).astype(np.int64)
        start = graph.indptr[:-1].astype(np.int64)
        cap = degree.copy()
        adjacency = np.empty(2 * graph.indices.size + 64, dtype=np.int32)
        adjacency[: graph.indices.size] = graph.indices
        if b2 > 0:
            cx, cy, cz = (np.ascontiguousarray(col) for col in graph.centres().T)
            sx, sy, sz = (np.ascontiguousarray(col, dtype=np.float64) for col in graph.xyz_sum.T)
        else:
            cx = cy = cz = sx = sy = sz = np.zeros(1)
        if b1 > 0:
            feat, norms = features_job.result()
    alive = np.ones(n, dtype=np.uint8)
    parent = np.arange(n, dtype=np.int64)
    merges = np.empty((to_do if record_merges else 0, 2), dtype=np.int64)
    state = np.array([0, n, graph.indices.size, -1], dtype=np.int64)
    bar = _progress_bar(to_do, name) if progress else None
    step = max(PROGRESS_EVERY * 16, to_do // 50) if bar is not None else to_do
    while state[kernel.DONE] < to_do:
        before = int(state[kernel.DONE])
        adjacency = kernel.merge_loop(
            min(to_do, before + step), state, heap_s, heap_n, score, img, plus, s2, alive, parent,
            adjacency, start, degree, cap, feat, norms, cx, cy, cz, sx, sy, sz,
            a1, a2, a3, t1, t2, t3, b1, b2, merges, record_merges,
        )  # fmt: skip
        if state[kernel.ERROR_NODE] >= 0:
            raise ValueError(
                f"cannot reach {n_classes} classes: node {int(state[kernel.ERROR_NODE])} has no neighbours"
                " left (the graph is disconnected)"
            )
        if bar is not None:
            bar.update(int(state[kernel.DONE]) - before)
    if bar is not None:
        bar.close()
    labels = dense_labels(parent)
    return MergeResult(
        labels=labels,
        n_classes=int(labels.max()) + 1,
        merges=merges if record_merges else None,
    )


@_without_cyclic_gc
def _merge_python(graph, n_classes, alpha, beta, feature_dims, record_merges, progress, name, in_place):
    """The pure-Python merge loop, the reference for the compiled one (~5x the CPU time; BLAS float32 dot
    products, so a near-tie in weight may go otherwise than in the compiled loop, see _merge_kernel)."""
    n = graph.n_nodes
    n_classes, (a1, a2, a3), (b1, b2) = _checked_request(graph, n_classes, alpha, beta)

    # Per-node state, all indexed by original node index (a merged node keeps its survivor's index).
    t1, t2, t3 = float(graph.n_images.sum()), float(n), float(graph.n_s2.sum())
    # Per-node scalars in typed arrays (8 bytes each; a Python list of floats costs 32 per entry).
    img = _typed("q", graph.n_images)
    plus = _typed("q", np.ones(n, dtype=np.int64))
    s2 = _typed("q", graph.n_s2)
    initial = a1 * (graph.n_images / t1) + a2 * (1 / t2) + a3 * (graph.n_s2 / t3)
    score = _typed("d", initial)
    alive = bytearray(b"\x01") * n
    parent = np.arange(n, dtype=np.int64)
    feat = norms = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The feature sums are NumPy work that runs without the GIL, on the other core while this thread
        # builds the Python adjacency lists and the heap.
        if b1 > 0:
            dims = None if feature_dims is None else _checked_dims(feature_dims, graph)
            features_job = pool.submit(_feature_sums_and_norms, graph, dims, in_place)
        adjacency = _adjacency_lists(graph)
        # Centres live in typed arrays too: per merge only a handful of scalars change, and their element
        # access is several times cheaper than NumPy's in this loop.
        if b2 > 0:
            cx, cy, cz = (_typed("d", col) for col in graph.centres().T)
            sx, sy, sz = (_typed("d", col) for col in graph.xyz_sum.T)
        # Heap entries are single ints ``score_bits << shift | node``: scores are positive doubles, whose
        # IEEE bit patterns order like their values, so the ints order exactly like (score, node) tuples
        # and compare about three times faster. ``score_bits`` reads the bits of ``score`` in place.
        score_bits = memoryview(score).cast("B").cast("q")
        shift = max(1, (n - 1).bit_length())
        node_mask = (1 << shift) - 1
        heap = [(bits << shift) | node for node, bits in enumerate(initial.view(np.int64).tolist())]
        heapq.heapify(heap)
        if b1 > 0:
            feat, norms_array = features_job.result()
            norms = _typed("d", norms_array)  # typed, like the centres
            take = feat.take
    merges = [] if record_merges else None
    to_do = n - n_classes
    done = 0
    bar = _progress_bar(to_do, name) if progress else None
    heappop, heappush, asin, sqrt, pi = heapq.heappop, heapq.heappush, math.asin, math.sqrt, math.pi
    while done < to_do:
        key = heappop(heap)
        u = key & node_mask
        if not alive[u] or key >> shift != score_bits[u]:
            continue  # stale entry
        nbrs = adjacency[u]
        if not nbrs:
            raise ValueError(
                f"cannot reach {n_classes} classes: node {u} has no neighbours left (the graph is disconnected)"
            )
        if len(nbrs) == 1:
            v = nbrs[0]
        elif b1 == 0:
            # Geographic only: the chord is monotone in the angle, so compare squared chords.
            ux, uy, uz = cx[u], cy[u], cz[u]
            best = 9.0
            for w in nbrs:
                dx, dy, dz = cx[w] - ux, cy[w] - uy, cz[w] - uz
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < best or (d2 == best and w < v):
                    best, v = d2, w
        else:
            # take() gathers rows several times faster than indexing with a list, and ndarray.dot runs the
            # same BLAS gemv as ``@``: the similarities are bit for bit those of ``feat[nbrs] @ feat[u]``.
            sims = take(nbrs, 0).dot(feat[u]).tolist()
            nu = norms[u]
            best = math.inf
            if b2 > 0:
                ux, uy, uz = cx[u], cy[u], cz[u]
                for w, sim in zip(nbrs, sims):
                    denom = norms[w] * nu
                    weight = b1 * (1.0 - (sim / denom if denom > 0 else 0.0))
                    dx, dy, dz = cx[w] - ux, cy[w] - uy, cz[w] - uz
                    half_chord = sqrt(dx * dx + dy * dy + dz * dz) * 0.5
                    if half_chord > 1.0:  # rounding; as min(half_chord, 1.0) without the call
                        half_chord = 1.0
                    weight += b2 * (2.0 * asin(half_chord) / pi)
                    if weight < best or (weight == best and w < v):
                        best, v = weight, w
            else:
                for w, sim in zip(nbrs, sims):
                    denom = norms[w] * nu
                    weight = b1 * (1.0 - (sim / denom if denom > 0 else 0.0))
                    if weight < best or (weight == best and w < v):
                        best, v = weight, w
        # Merge u into v.
        alive[u] = 0
        parent[u] = v
        img[v] += img[u]
        plus[v] += plus[u]
        s2[v] += s2[u]
        if b2 > 0:
            x, y, z = sx[v] + sx[u], sy[v] + sy[u], sz[v] + sz[u]
            sx[v], sy[v], sz[v] = x, y, z
            norm = sqrt(x * x + y * y + z * z)
            if norm > 0:
                cx[v], cy[v], cz[v] = x / norm, y / norm, z / norm
        if b1 > 0:
            fv = feat[v]
            fv += feat[u]
            norms[v] = sqrt(fv.dot(fv))  # the same BLAS dot as ``fv @ fv``, without matmul's overhead
        # Adjacency lists stay duplicate-free: u's neighbours now see v instead of u (once), and v gains
        # those of u's neighbours it did not have.
        around_v = adjacency[v]
        around_v.remove(u)
        for w in nbrs:
            if w == v:
                continue
            around = adjacency[w]
            if v in around:
                around.remove(u)
            else:
                around[around.index(u)] = v
                around_v.append(w)
        adjacency[u] = None
        new = a1 * (img[v] / t1) + a2 * (plus[v] / t2) + a3 * (s2[v] / t3)
        score[v] = new
        heappush(heap, (score_bits[v] << shift) | v)
        if merges is not None:
            merges.append((u, v))
        done += 1
        if bar is not None and done % PROGRESS_EVERY == 0:
            bar.update(PROGRESS_EVERY)
    if bar is not None:
        bar.update(done % PROGRESS_EVERY)
        bar.close()
    labels = dense_labels(parent)
    return MergeResult(
        labels=labels,
        n_classes=int(labels.max()) + 1,
        merges=np.asarray(merges, dtype=np.int64).reshape(-1, 2) if merges is not None else None,
    )


def _feature_sums_and_norms(
    graph: InitialGraph, dims: np.ndarray | None, in_place: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-node feature sums (restricted to ``dims``) and their float64 norms.

    The copy is filled a block of rows at a time: ``features[:, dims]`` whole would be a Fortran-ordered
    copy that then needs a C-ordered one (row gathers and the per-merge gemv need C order), two N x |dims|
    arrays at once (1.9 GB at 2.8M nodes x 86 dims), which set a geoclass worker's peak memory.
    """
    weights = graph.n_images.astype(graph.features.dtype)
    if dims is None and in_place:
        feat = graph.features
        feat *= weights[:, None]
    else:
        n_dims = graph.features.shape[1] if dims is None else dims.size
        feat = np.empty((graph.n_nodes, n_dims), dtype=graph.features.dtype)
        for lo in range(0, graph.n_nodes, _ROWS_PER_BLOCK):
            rows = graph.features[lo : lo + _ROWS_PER_BLOCK]
            # Sums, not means: cosine similarity is scale-free and a sum merges by one addition.
            np.multiply(rows if dims is None else rows[:, dims], weights[lo : lo + _ROWS_PER_BLOCK, None],
                        out=feat[lo : lo + _ROWS_PER_BLOCK])  # fmt: skip
    return feat, np.sqrt(np.einsum("ij,ij->i", feat, feat, dtype=np.float64))


_ROWS_PER_BLOCK = 65_536


def _checked_dims(feature_dims: Sequence[int], graph: InitialGraph) -> np.ndarray:
    dims = np.asarray(feature_dims, dtype=np.int64)
    if (
        dims.size == 0
        or dims.min() < 0
        or dims.max() >= graph.embedding_dim
        or np.unique(dims).size != dims.size
    ):
        raise ValueError(
            f"feature_dims must be distinct indices in [0, {graph.embedding_dim}); got {dims.size} dims"
            f" in [{dims.min() if dims.size else '-'}, {dims.max() if dims.size else '-'}]"
        )
    return dims


def _typed(code: str, values: np.ndarray) -> array:
    out = array(code)
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64 if code == "d" else np.int64).tobytes())
    return out


def _adjacency_lists(graph: InitialGraph) -> list:
    # One int object per node shared by every set that holds it (tolist() would make one per entry).
    node = list(range(graph.n_nodes))
    ind = map(node.__getitem__, graph.indices.tolist())
    return [list(islice(ind, degree)) for degree in np.diff(graph.indptr).tolist()]


def dense_labels(parent: np.ndarray) -> np.ndarray:
    """Resolve a parent-pointer forest (roots point to themselves) into dense ids ordered by root index."""
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, labels = np.unique(root, return_inverse=True)
    return labels.astype(np.int32)


def _progress_bar(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"merging {name}".strip(), unit="merge", mininterval=2.0, leave=False)


def merge_reference_networkx(
    graph: InitialGraph,
    n_classes: int,
    alpha: Sequence[float] = (1.0, 0.0, 0.0),
    beta: Sequence[float] = (1.0, 0.0),
    feature_dims: Sequence[int] | None = None,
    *,
    scan: bool = True,
) -> MergeResult:
    """Slow, obviously correct greedy merging on a networkx graph: every step recomputes everything.

    Each networkx node is a class holding its member list; its score, mean feature and centre are
    recomputed from the members at every step, and ``nx.contracted_nodes`` does the adjacency. Used by
    tests and the benchmark as an independent check of :func:`merge_nodes` (same rule, same tie-breaking).
    ``scan=True`` finds the lowest score by scanning every node (O(N²), small graphs); ``scan=False`` keeps
    a heap of (score, node) and discards entries whose node is gone or whose score no longer matches the
    one recomputed from its members, so a 50,000-node graph finishes in minutes.
    """
    import networkx as nx

    a1, a2, a3 = _normalised_weights(alpha, 3, "alpha")
    b1, b2 = _normalised_weights(beta, 2, "beta")
    n = graph.n_nodes
    dims = None if feature_dims is None else np.asarray(feature_dims)
    g = nx.Graph()
    g.add_nodes_from((i, {"members": [i]}) for i in range(n))
    g.add_edges_from(map(tuple, graph.edges().tolist()))
    t1, t2, t3 = float(graph.n_images.sum()), float(n), float(graph.n_s2.sum())

    def score(node):
        m = g.nodes[node]["members"]
        return (
            a1 * (int(graph.n_images[m].sum()) / t1)
            + a2 * (len(m) / t2)
            + a3 * (int(graph.n_s2[m].sum()) / t3)
        )

    def mean_feature(node):
        m = g.nodes[node]["members"]
        f = graph.features[m].astype(np.float64)
        if dims is not None:
            f = f[:, dims]
        return (f * graph.n_images[m][:, None]).sum(axis=0) / graph.n_images[m].sum()

    def centre(node):
        total = graph.xyz_sum[g.nodes[node]["members"]].sum(axis=0)
        return total / np.linalg.norm(total)

    def weight(u, w):
        out = 0.0
        if b1 > 0:
            fu, fw = mean_feature(u), mean_feature(w)
            denom = np.linalg.norm(fu) * np.linalg.norm(fw)
            out += b1 * (1.0 - (float(fu @ fw) / denom if denom > 0 else 0.0))
        if b2 > 0:
            chord = float(np.linalg.norm(centre(u) - centre(w)))
            out += b2 * (2.0 * math.asin(min(chord / 2.0, 1.0)) / math.pi)
        return out

    merges = []
    heap = [(score(x), x) for x in g.nodes]
    heapq.heapify(heap)
    while g.number_of_nodes() > n_classes:
        if scan:
            u = min(g.nodes, key=lambda x: (score(x), x))
        else:
            while True:
                s, u = heapq.heappop(heap)
                if u in g and s == score(u):
                    break
        v = min(g.neighbors(u), key=lambda w: (weight(u, w), w))
        members = g.nodes[v]["members"] + g.nodes[u]["members"]
        g = nx.contracted_nodes(g, v, u, self_loops=False, copy=False)
        g.nodes[v]["members"] = members
        g.nodes[v].pop("contraction", None)
        if not scan:
            heapq.heappush(heap, (score(v), v))
        merges.append((u, v))
    parent = np.arange(n, dtype=np.int64)
    for node in g.nodes:
        parent[g.nodes[node]["members"]] = node
    labels = dense_labels(parent)
    return MergeResult(
        labels=labels, n_classes=int(labels.max()) + 1, merges=np.asarray(merges, np.int64).reshape(-1, 2)
    )
