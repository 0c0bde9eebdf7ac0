"""Refinement inside the combination ("CPlaNet[1-N]+R"): retrieval among the training photos of the top partitions.

After Eq. 3 has ranked the partitions, the training photos of the ``top_partitions`` best partitions are
searched by feature similarity; when the most similar one is similar enough (``min_similarity``, cosine),
the prediction moves to that photo's location, otherwise it stays at Eq. 4's partition centre. Retrieval is
strong at street scale but is fooled by look-alikes far away; the classifier's partitions keep the search
in the right region, and the threshold keeps Eq. 4 where no neighbour is convincing. Both settings are
chosen on the eval split (``choose_settings``), never on a test set.

The index is compact: each training photo keeps a product-quantisation code of its unit feature vector
(``code_bytes`` bytes, one byte per sub-vector, 256 centroids each; faiss trains the codebooks) and its
location as two float32, grouped by its partition of all the sets (``indptr``). At 2048-d features and
32-byte codes that is about 41 bytes per photo (``per_photo_bytes``), against 8 KB for the float32 vector,
plus the float16 codebooks, a fixed 1 MiB (``fixed_bytes``). The code size trades bytes for ranking
fidelity: at 128-d, 32-byte codes (4 dimensions per sub-vector) ranked the exact nearest candidate first for
58 % of eval photos and lost 2 points at 1 km against exact search; 64-byte codes (2 dimensions) are used there.
The search is asymmetric-distance computation in NumPy: one (sub-vector x centroid) table per query,
then a gather per candidate, so serving needs NumPy only.

A method over a subset of the sets (e.g. CPlaNet[1-5] of a model that also has PlaNet) has coarser
partitions, each a union of partitions of all the sets; ``Refiner`` maps one to the other once.

    index = build_index(embeddings, lat, lng, photo_partition, partitions)   # faiss only here
    save_index(index, MODEL_DIR / "refine"); index = load_index(MODEL_DIR)  # None without an index
    refined = Refiner(index, method_partitions, full_partitions).refine(topk_ids, lat, lng, query_embeddings)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from partition_gen.geo import haversine_km
from partition_gen.partitions import Partitions

log = logging.getLogger(__name__)

INDEX_DIR = "refine"
INDEX_FILE = "index.npz"
SETTINGS_FILE = "settings.json"
SUCCESS = "_SUCCESS"
DEFAULT_CODE_BYTES = 32
DEFAULT_TOP_PARTITIONS = 5
DEFAULT_MIN_SIMILARITY = 0.3
REFINED_SUFFIX = "+R"
_KSUB = 256
# Photos the codebooks are trained on (faiss asks for >= 39 per centroid; 64 x 256 is plenty).
DEFAULT_TRAIN_SIZE = 16_384
# Queries searched at once: bounds the candidate lists (every photo of up to 20 partitions per query).
QUERY_CHUNK = 2048


@dataclass(frozen=True)
class RefineIndex:
    """Training photos as PQ codes + float32 locations, grouped by partition of all the sets."""

    partitions_id: str
    set_names: tuple[str, ...]
    dim: int
    centroids: np.ndarray  # (M, 256, dsub) float16; unit vectors are zero-padded to M * dsub
    codes: np.ndarray  # (N, M) uint8, rows sorted by partition
    lat: np.ndarray  # (N,) float32
    lng: np.ndarray  # (N,) float32
    indptr: np.ndarray  # (P + 1,) int32: photos of partition p are rows indptr[p]:indptr[p+1]
    settings: dict = field(default_factory=dict)  # top_partitions, min_similarity (chosen on the eval split)

    @property
    def n_photos(self) -> int:
        return int(self.codes.shape[0])

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.centroids, self.codes, self.lat, self.lng, self.indptr)))

    def bytes_per_photo(self) -> float:
        """Everything the index holds (codes, locations, partition offsets, codebooks) per training photo."""
        return self.nbytes() / max(self.n_photos, 1)

    def per_photo_bytes(self) -> float:
        """What grows with the corpus: codes, locations and partition offsets per training photo."""
        return (self.nbytes() - self.centroids.nbytes) / max(self.n_photos, 1)

    def fixed_bytes(self) -> int:
        """What does not grow with the corpus: the PQ codebooks (256 x the padded dimension x float16)."""
        return int(self.centroids.nbytes)

    def with_settings(self, **settings) -> RefineIndex:
        return RefineIndex(**{**self.__dict__, "settings": {**self.settings, **settings}})


# ------------------------------------------------------------------------------------------------ building


def unit_rows(x: np.ndarray, width: int | None = None) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), zero-padded to ``width`` columns."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (photos x dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"embedding row {int(np.argmax(~np.isfinite(x).all(axis=1)))} holds NaN or inf")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))
    if width is not None and width > x.shape[1]:
        x = np.pad(x, ((0, 0), (0, width - x.shape[1])))
    return np.ascontiguousarray(x)


def photo_partitions(partitions: Partitions, labels: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each photo's partition id from its class in every set (the labels of the training examples)."""
    missing = [name for name in partitions.set_names if name not in labels]
    if missing:
        raise ValueError(f"no labels for sets {missing}")
    rows = np.stack([np.asarray(labels[name], dtype=np.int64) for name in partitions.set_names], axis=1)
    return _match_rows(partitions.tuples.astype(np.int64), rows, "a photo's classes form no partition")


def _match_rows(table: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    """Index in ``table`` (unique rows) of each row of ``rows``; every row must occur."""
    both = np.concatenate([table, rows], axis=0)
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    slot = np.full(inverse.max() + 1 if inverse.size else 0, -1, dtype=np.int64)
    slot[inverse[: len(table)]] = np.arange(len(table))
    found = slot[inverse[len(table) :]]
    if (found < 0).any():
        i = int(np.argmax(found < 0))
        raise ValueError(f"{what}: row {i} {rows[i].tolist()}")
    return found


def build_index(
    embeddings: np.ndarray,
    lat,
    lng,
    photo_partition: np.ndarray,
    partitions: Partitions,
    code_bytes: int = DEFAULT_CODE_BYTES,
    seed: int = 0,
    train_size: int = DEFAULT_TRAIN_SIZE,
) -> RefineIndex:
    """Train PQ codebooks (faiss) on the unit training vectors and encode every photo."""
    import faiss

    emb = np.asarray(embeddings)
    n, dim = emb.shape
    lat, lng, part = (np.asarray(a) for a in (lat, lng, photo_partition))
    if not len(lat) == len(lng) == len(part) == n:
        raise ValueError(f"lengths differ: {n} embeddings, {len(lat)} lat, {len(lng)} lng, {len(part)} partitions")
    if n < _KSUB:
        raise ValueError(f"a refinement index needs at least {_KSUB} training photos, got {n}")
    if part.size and (part.min() < 0 or part.max() >= partitions.n_partitions):
        raise ValueError(f"partition ids outside 0..{partitions.n_partitions - 1}")
    m = int(min(code_bytes, dim))
    dsub = -(-dim // m)
    x = unit_rows(emb, m * dsub)
    pq = faiss.ProductQuantizer(m * dsub, m, 8)
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, size=min(n, max(int(train_size), _KSUB)), replace=False))]
    pq.cp.seed = int(seed)
    # One OpenMP thread: faiss' threads spin-wait, and on a shared machine (Beam workers, other jobs) two of
    # them took 3-4x the wall time of one (55 s against 15 s for 32k x 128-d); k-means here is seconds of CPU.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        pq.train(train)
        codes = pq.compute_codes(x)
    finally:
        faiss.omp_set_num_threads(threads)
    # Codebooks kept as float16: half the fixed size (1 MiB at 2048-d), and their rounding (2^-11 relative)
    # is far below the quantisation error itself; tables are computed in float32.
    centroids = faiss.vector_to_array(pq.centroids).reshape(m, _KSUB, dsub).astype(np.float16)
    order, indptr = _partition_order(part, partitions.n_partitions)
    index = RefineIndex(
        partitions_id=partitions.partitions_id,
        set_names=tuple(partitions.set_names),
        dim=int(dim),
        centroids=centroids,
        codes=np.ascontiguousarray(codes[order]),
        lat=np.asarray(lat, dtype=np.float32)[order],
        lng=np.asarray(lng, dtype=np.float32)[order],
        indptr=indptr,
        settings={"top_partitions": DEFAULT_TOP_PARTITIONS, "min_similarity": DEFAULT_MIN_SIMILARITY},
    )
    log.info("refinement index: %d photos, %d-byte codes, %.1f bytes per photo", n, m, index.bytes_per_photo())
    return index


def _partition_order(part: np.ndarray, n_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The index's row order (photos grouped by partition, stable) and its (P + 1,) int32 offsets."""
    order = np.argsort(part, kind="stable")
    return order, np.searchsorted(part[order], np.arange(n_partitions + 1)).astype(np.int32)


def encodes_photos(index: RefineIndex, lat, lng, photo_partition: np.ndarray) -> bool:
    """Whether ``index`` holds exactly these photos (locations, in build_index's partition order)."""
    part = np.asarray(photo_partition)
    if len(part) != index.n_photos or part.size and part.max() >= len(index.indptr) - 1:
        return False
    order, indptr = _partition_order(part, len(index.indptr) - 1)
    return bool(
        np.array_equal(indptr, index.indptr)
        and np.array_equal(np.asarray(lat, dtype=np.float32)[order], index.lat)
        and np.array_equal(np.asarray(lng, dtype=np.float32)[order], index.lng)
    )


def save_index(index: RefineIndex, directory: str) -> None:
    """``index.npz`` + ``settings.json`` + ``_SUCCESS`` in ``directory`` (local or gs://)."""
    import io

    from schemas import artifacts

    buffer = io.BytesIO()
    np.savez(buffer, centroids=index.centroids, codes=index.codes, lat=index.lat, lng=index.lng, indptr=index.indptr)
    meta = {"partitions_id": index.partitions_id, "set_names": list(index.set_names), "dim": index.dim,
            "n_photos": index.n_photos, "bytes_per_photo": index.bytes_per_photo(), "settings": index.settings}
    # The artifact protocol of schemas.artifacts: no marker while files change, then a checksummed one.
    artifacts.remove_marker(directory)
    artifacts.write_bytes(artifacts.join(directory, INDEX_FILE), buffer.getvalue())
    artifacts.write_bytes(artifacts.join(directory, SETTINGS_FILE), (json.dumps(meta, indent=2) + "\n").encode())
    artifacts.write_marker(directory)


def index_dir(model_dir: str) -> str:
    from schemas.io import join_path

    return join_path(model_dir, INDEX_DIR)


def load_index(model_dir: str) -> RefineIndex | None:
    """The refinement index of a model directory (its ``refine/``), or None when it has none."""
    import io

    from schemas.io import join_path, path_exists, read_bytes

    directory = index_dir(model_dir)
    if not path_exists(join_path(directory, SUCCESS)):
        return None
    from schemas import artifacts

    artifacts.verify(directory, "refinement index")  # an edited or half-rewritten index is refused, not used
    meta = json.loads(read_bytes(join_path(directory, SETTINGS_FILE)).decode())
    arrays = np.load(io.BytesIO(read_bytes(join_path(directory, INDEX_FILE))))
    return RefineIndex(
        partitions_id=meta["partitions_id"], set_names=tuple(meta["set_names"]), dim=int(meta["dim"]),
        centroids=arrays["centroids"], codes=arrays["codes"], lat=arrays["lat"], lng=arrays["lng"],
        indptr=arrays["indptr"], settings=dict(meta.get("settings") or {}),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ search


@dataclass(frozen=True)
class Refined:
    """Per image: the refined location, whether it moved, and the best candidate's similarity (-inf: none)."""

    lat: np.ndarray
    lng: np.ndarray
    moved: np.ndarray
    similarity: np.ndarray
    neighbour: np.ndarray  # index row of the best candidate, -1 without candidates


class Refiner:
    """Refinement for one method: its partitions are those of all the index's sets, or of a subset of them
    (then ``full``, the partitions of all the sets, maps one onto the other)."""

    def __init__(self, index: RefineIndex, partitions: Partitions, full: Partitions | None = None):
        unknown = [name for name in partitions.set_names if name not in index.set_names]
        if unknown:
            raise ValueError(f"method sets {unknown} are not among the refinement index's {list(index.set_names)}")
        self.index = index
        self.partitions = partitions
        self._centroids: np.ndarray | None = None  # float32 copy of the codebooks, made on first search
        if tuple(partitions.set_names) == tuple(index.set_names):
            full, method_of_full = partitions, None
        elif full is None:
            raise ValueError("a refiner for a subset of the sets needs the partitions of all the sets (full=)")
        if full.partitions_id != index.partitions_id:
            raise ValueError(
                f"refinement index built for partitions {index.partitions_id}, used with {full.partitions_id}"
            )
        if tuple(partitions.set_names) == tuple(index.set_names):
            self._order = np.arange(index.n_photos)
            self._indptr = index.indptr.astype(np.int64)
            return
        # Method partitions are unions of the index's: the method partition of every index photo, then the
        # photos regrouped by it (a permutation kept in memory, not on disk).
        cols = [full.set_index(name) for name in partitions.set_names]
        method_of_full = _match_rows(
            partitions.tuples.astype(np.int64), full.tuples[:, cols].astype(np.int64),
            "a partition of all the sets lies in no partition of the method",
        )
        method_of_row = np.repeat(method_of_full, np.diff(index.indptr))
        self._order = np.argsort(method_of_row, kind="stable")
        self._indptr = np.searchsorted(method_of_row[self._order], np.arange(partitions.n_partitions + 1))

    def candidates(self, partition_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image, index row) pairs: every photo of every listed partition (B, k; -1 = none) of each image."""
        img, rows, _ = self.ranked_candidates(partition_ids)
        return img, rows

    def ranked_candidates(self, partition_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, index row, rank of the row's partition in the image's list) of every candidate."""
        ids = np.asarray(partition_ids, dtype=np.int64)
        img = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
        rank = np.tile(np.arange(ids.shape[1]), ids.shape[0])
        pid = ids.ravel()
        keep = pid >= 0
        img, pid, rank = img[keep], pid[keep], rank[keep]
        start = self._indptr[pid]
        count = self._indptr[pid + 1] - start
        offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        rows = self._order[np.repeat(start, count) + offsets]
        return np.repeat(img, count), rows, np.repeat(rank, count)

    def similarities(self, queries: np.ndarray, img: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Approximate cosine similarity (PQ asymmetric distance) of query ``img`` to index photo ``rows``."""
        m, ksub, dsub = self.index.centroids.shape
        q = unit_rows(queries, m * dsub).reshape(len(queries), m, dsub)
        if self._centroids is None:
            self._centroids = np.asarray(self.index.centroids, dtype=np.float32)
        tables = np.einsum("bmd,mkd->bmk", q, self._centroids)  # (B, M, 256)
        out = np.zeros(img.size, dtype=np.float32)
        codes = self.index.codes
        for lo in range(0, img.size, 65_536):
            i, r = img[lo : lo + 65_536], rows[lo : lo + 65_536]
            out[lo : lo + i.size] = tables[i[:, None], np.arange(m)[None, :], codes[r]].sum(axis=1)
        return out

    def refine(
        self,
        topk_ids: np.ndarray,
        base_lat: np.ndarray,
        base_lng: np.ndarray,
        queries: np.ndarray,
        top_partitions: int | None = None,
        min_similarity: float | None = None,
    ) -> Refined:
        """Move each image to its most similar training photo among its top partitions when similar enough."""
        k = int(top_partitions or self.index.settings.get("top_partitions", DEFAULT_TOP_PARTITIONS))
        threshold = float(
            self.index.settings.get("min_similarity", DEFAULT_MIN_SIMILARITY) if min_similarity is None else min_similarity
        )
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.index.dim:
            raise ValueError(f"query embeddings have shape {queries.shape}, the index holds {self.index.dim}-d photos")
        best_sim, best_row = self.best_neighbours(np.asarray(topk_ids)[:, :k], queries)
        moved = best_sim >= threshold
        safe = np.where(best_row >= 0, best_row, 0)
        lat = np.where(moved, self.index.lat[safe].astype(np.float64), base_lat)
        lng = np.where(moved, self.index.lng[safe].astype(np.float64), base_lng)
        return Refined(lat=lat, lng=lng, moved=moved, similarity=best_sim, neighbour=best_row)

    def best_neighbours(self, topk_ids: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per image the highest similarity among its candidates and its row (ties: the lower row); -inf/-1 if none."""
        k = np.asarray(topk_ids).shape[1]
        return self.best_neighbours_per_k(topk_ids, queries, [k])[k]

    def best_neighbours_per_k(
        self, topk_ids: np.ndarray, queries: np.ndarray, ks: Sequence[int], chunk: int = QUERY_CHUNK
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``best_neighbours`` over the first k partitions, for every k in ``ks``, from one search of the
        first max(ks): the similarities are computed once, then each k keeps its candidates' best.

        Queries are searched ``chunk`` at a time, so the candidate lists (every photo of up to 20 partitions
        per query) stay bounded whatever the batch; each image's answer depends on its own candidates only,
        so the chunking changes no result. (At 200k training photos the stage's 7.6 GB peak did not move
        with it: that memory is elsewhere in build_refine_index.)"""
        n = len(queries)
        ks = sorted({int(k) for k in ks})
        topk_ids = np.asarray(topk_ids)[:, : ks[-1]]
        out = {k: (np.full(n, -np.inf, dtype=np.float32), np.full(n, -1, dtype=np.int64)) for k in ks}
        for lo in range(0, n, max(1, chunk)):
            img, rows, rank = self.ranked_candidates(topk_ids[lo : lo + chunk])
            sims = self.similarities(queries[lo : lo + chunk], img, rows)
            order = np.lexsort((rows, -sims, img))  # per image: most similar first, ties to the lower row
            img, rows, rank, sims = img[order], rows[order], rank[order], sims[order]
            for k in ks:
                keep = rank < k
                i, r, v = img[keep], rows[keep], sims[keep]
                if i.size:
                    first = np.r_[True, i[1:] != i[:-1]]
                    out[k][0][lo + i[first]] = v[first]
                    out[k][1][lo + i[first]] = r[first]
        return out


def refined_name(method_name: str) -> str:
    return f"{method_name}{REFINED_SUFFIX}"


def refine_predictions(
    index: RefineIndex,
    method_name: str,
    method_partitions: Partitions,
    full_partitions: Partitions,
    topk_ids: np.ndarray,
    lat: np.ndarray,
    lng: np.ndarray,
    embeddings: np.ndarray,
) -> Refined | None:
    """The "+R" answer for a method's predictions (top-k partition ids, Eq. 4 lat/lng, the photos' features),
    with the settings chosen for it on the eval split; None when the index has none for this method.

    For batch_predict and locate: ``index = load_index(model_dir)`` (None: no index, nothing to do).
    ``topk_ids`` should hold at least ``settings["top_partitions"]`` columns (build_refine_index uses 20).
    """
    settings = (index.settings.get("methods") or {}).get(method_name)
    if settings is None:
        return None
    return Refiner(index, method_partitions, full_partitions).refine(topk_ids, lat, lng, embeddings, **settings)


# ------------------------------------------------------------------------------------------------ settings


def mean_accuracy(distances_km: np.ndarray, thresholds_km: Sequence[float]) -> float:
    d = np.asarray(distances_km, dtype=np.float64)
    return float((d[:, None] < np.asarray(thresholds_km, dtype=np.float64)[None, :]).mean())


def choose_settings(
    refiner: Refiner,
    topk_ids: np.ndarray,
    base_lat: np.ndarray,
    base_lng: np.ndarray,
    queries: np.ndarray,
    true_lat: np.ndarray,
    true_lng: np.ndarray,
    thresholds_km: Sequence[float],
    top_partitions: Sequence[int] = (1, 2, 3, 5, 10, 20),
    similarity_quantiles: int = 40,
) -> dict:
    """(top_partitions, min_similarity) maximising the mean accuracy over ``thresholds_km`` on held-out photos.

    For each k the best-neighbour similarities are computed once; every threshold among their quantiles is
    then a cheap re-scoring. Returns the settings and the eval-split accuracy of Eq. 4 and of the choice.
    """
    base_d = haversine_km(base_lat, base_lng, true_lat, true_lng)
    best = {"top_partitions": 1, "min_similarity": float("inf"), "mean_accuracy": mean_accuracy(base_d, thresholds_km)}
    base_score = best["mean_accuracy"]
    available = np.asarray(topk_ids).shape[1]
    ks = sorted({min(int(k), available) for k in top_partitions})
    per_k = refiner.best_neighbours_per_k(topk_ids, np.asarray(queries, dtype=np.float32), ks)
    for k in ks:
        sim, row = per_k[k]
        safe = np.where(row >= 0, row, 0)
        moved_d = haversine_km(refiner.index.lat[safe], refiner.index.lng[safe], true_lat, true_lng)
        finite = sim[np.isfinite(sim)]
        if not finite.size:
            continue
        for t in np.unique(np.quantile(finite, np.linspace(0, 1, similarity_quantiles + 1))):
            moved = sim >= t
            score = mean_accuracy(np.where(moved, moved_d, base_d), thresholds_km)
            if score > best["mean_accuracy"] + 1e-12:
                best = {"top_partitions": k, "min_similarity": float(t), "mean_accuracy": score}
    best["mean_accuracy_eq4"] = base_score
    return best


# ------------------------------------------------------------------------------------------------ serving

# The combiner keeps this many partitions when an index is used: the calibration's features read them.
CALIBRATION_TOP_K = 20


class AccuracyExtras:
    """The refinement index and confidence calibrations of a model, applied to one method's predictions
    (``batch_predict`` and ``locate`` alike)."""

    def __init__(self, index, calibrations: dict, partitions):
        self.index, self.calibrations, self.partitions = index, calibrations, partitions
        self._refiners: dict = {}

    @classmethod
    def load(cls, model_dir: str, partitions) -> AccuracyExtras | None:
        """The model's extras, or None when its directory has no refinement index."""
        from partition_gen import confidence

        index = load_index(model_dir)
        if index is None:
            return None
        if index.partitions_id != partitions.partitions_id:
            raise ValueError(f"{index_dir(model_dir)} was built for partitions {index.partitions_id}, "
                             f"not {partitions.partitions_id}")
        return cls(index, confidence.load_calibrations(index_dir(model_dir)), partitions)

    def top_k(self, top_k: int) -> int:
        """Partitions the combiner must keep: the calibration's features look at the top CALIBRATION_TOP_K."""
        return max(top_k, CALIBRATION_TOP_K)

    def variants(self, name: str, combiner, pred, probs: dict, embeddings: np.ndarray | None) -> list:
        """[(method name, lat, lng, (radius50, radius90))]: the method itself, then its "+R" row if it has one."""
        from partition_gen import confidence

        heads = [probs[n] for n in combiner.partitions.set_names]
        tuples = combiner.partitions.tuples
        features = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], tuples, heads)
        out = [(name, pred.lat, pred.lng, self._radii(name, features))]
        settings = (self.index.settings.get("methods") or {}).get(name)
        if settings is None or embeddings is None:
            return out
        if name not in self._refiners:
            self._refiners[name] = Refiner(self.index, combiner.partitions, self.partitions)
        moved = self._refiners[name].refine(pred.topk_ids, pred.lat, pred.lng, embeddings, **settings)
        features = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], tuples, heads,
                                                moved.moved, moved.similarity)
        refined = refined_name(name)
        return out + [(refined, moved.lat, moved.lng, self._radii(refined, features))]

    def _radii(self, name: str, features: np.ndarray):
        calibration = self.calibrations.get(name)
        return (None, None) if calibration is None else calibration.radii(features)
