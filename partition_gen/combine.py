"""The combiner: several coarse classifiers -> one fine-grained prediction (Sec. 4.2, Eq. 3 and 4).

For a batch of images and the class probabilities P_i of each set i:

- NormalizedSum (Eq. 3): every node g gets s(g) = sum_i P_i(c_i(g)) / Z_i with Z_i = sum_c P_i(c) * |c|
  (|c| = nodes in class c), so a set of large classes does not outweigh a set of small ones;
- SimpleSum: the same without Z_i;
- a single set: its arg-max class (SimpleSum over one set; the partitions of one set are its classes).

All nodes of a partition share a score, so scoring runs over partitions: score[b, p] = sum_i q_i[b, T[p, i]]
with q_i = P_i / Z_i, a gather through the partition tuples, never a loop over nodes. The result is exactly the
per-node answer: the arg-max nodes are the nodes of the arg-max partitions (a test checks it against a direct
per-node Eq. 3).

Arg-max ties: every partition whose score is >= max - ``tie_rtol`` * |max| (default 1e-12, i.e. equal up to
float64 rounding of sums taken in different orders) is in the arg-max set. The predicted location (Eq. 4) is
the mean of the training images' unit vectors over all arg-max partitions, projected back to the sphere
(from their stored xyz sums); a set of partitions without images falls back to its nodes' centres.

Speed: most images have peaked distributions, so a threshold bound avoids touching most partitions. The
candidates are the partitions inside the classes with P_i >= r * max P_i of some set (through the
(set, class) -> partitions index); every other partition scores at most B = sum_i r * max P_i / z_i. When the
k-th best candidate is >= B and the best is > B + tolerance, the top-k and the whole arg-max set are exact;
otherwise r shrinks 16-fold, and an image whose candidates would cover more than ``dense_fraction`` of the
partitions is scored densely over all partitions. With numba there, an image with more than
``kernel_candidates_per_class`` candidates per class of all sets goes to the compiled rank-threshold search
(``partition_gen._combine_kernel``, exact too) instead. Float division and addition are monotone and the bound is
formed like the scores (same division, same order of summation), so the test is exact, not approximate.
No full float64 copy of the probabilities is made: q_i = float64(P_i) / z_i only where a score needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from partition_gen.geo import xyz_to_latlng
from partition_gen.partitions import Partitions

NORMALIZED_SUM = "NormalizedSum"
SIMPLE_SUM = "SimpleSum"
RULES = (NORMALIZED_SUM, SIMPLE_SUM)

DEFAULT_TIE_RTOL = 1e-12
# Dense scoring materialises (images x partitions) float64 scores; ~16 MB chunks stay clear of the
# fresh-page faults that dominate larger ones (measured: 2.4x faster than 64 MB chunks).
_DENSE_CHUNK_ELEMENTS = 2_000_000
_MIN_PRUNE_RATIO = 1e-9
# With the compiled search there, an image goes to it once its candidates exceed this many per class of all
# sets: the search costs about one pass over the classes, the NumPy path's candidate lists and their
# np.unique several times that per candidate. Measured on 1,024 images (1M nodes, 5 x 10,000 classes; and
# a 1-epoch model over 6 x ~4,500 classes): CPU ms per image at top-5 / top-20, NumPy only 0.33 / 2.70 and
# 2.13 / 2.02; at 0.05: 0.24 / 0.42 and 0.39 / 0.40.
KERNEL_CANDIDATES_PER_CLASS = 0.05


@dataclass(frozen=True)
class BatchPrediction:
    """Predictions for a batch of B images; top-k arrays are (B, k) with k = min(top_k, partitions)."""

    lat: np.ndarray
    lng: np.ndarray
    score: np.ndarray
    n_argmax: np.ndarray
    topk_ids: np.ndarray
    topk_scores: np.ndarray
    topk_lat: np.ndarray
    topk_lng: np.ndarray
    argmax_partitions: list[np.ndarray]


class Combiner:
    """Combines per-set class probabilities over ``partitions`` (all of its sets) with one rule."""

    def __init__(
        self,
        partitions: Partitions,
        rule: str = NORMALIZED_SUM,
        top_k: int = 5,
        tie_rtol: float = DEFAULT_TIE_RTOL,
        prune_ratio: float = 0.02,
        dense_fraction: float = 0.25,
        kernel_candidates_per_class: float = KERNEL_CANDIDATES_PER_CLASS,
    ):
        if rule not in RULES:
            raise ValueError(f"unknown combination rule '{rule}', expected one of {RULES}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not 0 < prune_ratio <= 1:
            raise ValueError(f"prune_ratio must be in (0, 1], got {prune_ratio}")
        self.partitions = partitions
        self.rule = rule
        self.top_k = min(top_k, partitions.n_partitions)
        self.tie_rtol = tie_rtol
        self.prune_ratio = prune_ratio
        self.dense_fraction = dense_fraction
        self.kernel_candidates_per_class = kernel_candidates_per_class
        self._center_lat, self._center_lng = partitions.centers_latlng()
        self._class_sizes = [s.astype(np.float64) for s in partitions.class_sizes]
        self._class_counts = [np.diff(indptr) for indptr in partitions.class_indptr]
        self._total_classes = int(sum(partitions.n_classes))
        self._index = None  # the class -> partitions index as the compiled search reads it

    # ------------------------------------------------------------------------------------------ inputs

    def _checked(self, probabilities: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per set: the probabilities as given (B, K_i) and the divisor z_i (B,) float64: Z_i or 1.

        q_i = float64(P_i) / z_i is formed only where a score needs it, never as a full float64 copy.
        """
        probs, divisors, batch = [], [], None
        for name, k, sizes in zip(self.partitions.set_names, self.partitions.n_classes, self._class_sizes):
            if name not in probabilities:
                raise ValueError(f"no probabilities for geoclass set '{name}' (got: {', '.join(probabilities)})")
            p = np.asarray(probabilities[name])
            if p.dtype not in (np.float32, np.float64):
                p = p.astype(np.float64)
            if p.ndim != 2 or p.shape[1] != k:
                raise ValueError(f"probabilities of set '{name}' have shape {p.shape}, expected (batch, {k})")
            if batch is not None and p.shape[0] != batch:
                raise ValueError(f"set '{name}' has {p.shape[0]} rows, other sets have {batch}")
            batch = p.shape[0]
            # NaN and inf propagate into these sums whatever the class sizes, so one pass checks them too.
            z = _row_dot(p, sizes) if self.rule == NORMALIZED_SUM else None
            total = z if z is not None else p.sum(axis=1, dtype=np.float64)
            if not np.isfinite(total).all() or (p.size and p.min() < 0):
                raise ValueError(f"probabilities of set '{name}' hold NaN, inf or negative values")
            if z is None:
                z = np.ones(batch)
            elif (z <= 0).any():
                raise ValueError(f"set '{name}': all probability is on classes without nodes (Z = 0)")
            probs.append(p)
            divisors.append(z)
        return probs, divisors

    def class_weights(self, probabilities: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """q_i per set, float64 (B, K_i): P_i / Z_i for NormalizedSum, P_i for SimpleSum."""
        probs, divisors = self._checked(probabilities)
        return [p.astype(np.float64) / z[:, None] for p, z in zip(probs, divisors)]

    # ------------------------------------------------------------------------------------------ scoring

    def scores(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """Dense (B, P) partition scores: for figures and checks; ``predict`` avoids building this."""
        probs, divisors = self._checked(probabilities)
        return self._dense_scores(probs, divisors, np.arange(probs[0].shape[0]))

    def _dense_scores(self, probs, divisors, images: np.ndarray) -> np.ndarray:
        tuples = self.partitions.tuples
        total = None
        for i, (p, z) in enumerate(zip(probs, divisors)):
            term = p[images][:, tuples[:, i]].astype(np.float64) / z[images][:, None]
            total = term if total is None else total + term
        return total

    def predict(self, probabilities: Mapping[str, np.ndarray]) -> BatchPrediction:
        probs, divisors = self._checked(probabilities)
        batch = probs[0].shape[0]
        out = _Output(batch, self.top_k)
        pending = np.arange(batch)
        ratio = self.prune_ratio
        while pending.size:
            if ratio < _MIN_PRUNE_RATIO:
                # Nearly uniform rows (or all-zero ones under SimpleSum) never separate from the bound.
                self._predict_dense(probs, divisors, pending, out)
                break
            pending = self._predict_pruned(probs, divisors, pending, ratio, out)
            ratio /= 16
        return out.finish(self)

    def _tolerance(self, best: np.ndarray) -> np.ndarray:
        return self.tie_rtol * np.abs(best)

    def _predict_pruned(self, probs, divisors, images: np.ndarray, ratio: float, out: _Output) -> np.ndarray:
        """Score only partitions in a class with P >= ratio * max P of its set; return undecided images.

        Images whose candidates would exceed ``dense_fraction`` of all partitions are scored densely instead.
        """
        parts = self.partitions
        n = images.size
        full = n == probs[0].shape[0]
        kernel = _kernel()
        bound = np.zeros(n)
        thresholds = []
        gathered = np.zeros(n, dtype=np.int64)
        for i, (p, z) in enumerate(zip(probs, divisors)):
            rows = p if full else p[images]
            threshold = rows.max(axis=1) * rows.dtype.type(ratio)
            # Classes left out have P < threshold, so each scores below threshold / z: a bound in float64 that
            # rounds the same way as the scores (same division, same summation order).
            bound = bound + threshold.astype(np.float64) / z[images]
            thresholds.append(threshold)
            if kernel is not None:  # one pass, no index arrays: most flat rows go the dense way anyway
                gathered += kernel.kept_partitions(rows, threshold, self._class_counts[i])
        picks = [None] * len(probs)
        if kernel is None:
            for i, p in enumerate(probs):
                picks[i] = self._kept_classes(p if full else p[images], thresholds[i])
                img, cls = picks[i]
                gathered += np.bincount(img, weights=self._class_counts[i][cls], minlength=n).astype(np.int64)
        dense = gathered > self.dense_fraction * parts.n_partitions
        if kernel is not None:
            dense |= gathered > self.kernel_candidates_per_class * self._total_classes
        if dense.any():
            self._predict_dense(probs, divisors, images[dense], out)
        if dense.all():
            return images[:0]
        if kernel is not None:
            for i, p in enumerate(probs):
                picks[i] = self._kept_classes(p if full else p[images], thresholds[i])

        cand_img, cand_pid = [], []
        for i, (img, cls) in enumerate(picks):
            keep = ~dense[img]
            img, cls = img[keep], cls[keep]
            start = parts.class_indptr[i][cls]
            count = self._class_counts[i][cls]
            offsets = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
            cand_pid.append(parts.class_members[i][np.repeat(start, count) + offsets])
            cand_img.append(np.repeat(img, count))
        key = np.unique(np.concatenate(cand_img).astype(np.int64) * parts.n_partitions + np.concatenate(cand_pid))
        img = key // parts.n_partitions
        pid = key % parts.n_partitions
        global_img = images[img]
        score = None
        for i, (p, z) in enumerate(zip(probs, divisors)):
            term = p[global_img, parts.tuples[pid, i]].astype(np.float64) / z[global_img]
            score = term if score is None else score + term

        # Within each image: best score first, then ascending partition id (deterministic ties).
        order = np.lexsort((pid, -score, img))
        img, pid, score = img[order], pid[order], score[order]
        local = np.arange(n)
        group_start = np.searchsorted(img, local)
        group_count = np.bincount(img, minlength=n)
        rank = np.arange(img.size) - group_start[img]
        best = np.full(n, -np.inf)
        has = group_count > 0
        best[has] = score[group_start[has]]
        k = out.k
        kth = np.full(n, -np.inf)
        enough = group_count >= k
        kth[enough] = score[group_start[enough] + k - 1]
        tol = self._tolerance(best)
        decided = ~dense & enough & (kth >= bound) & (bound < best - tol)

        pick = decided[img]
        top_mask = pick & (rank < k)
        out.set_topk(images[img[top_mask]], rank[top_mask], pid[top_mask], score[top_mask])
        tie_mask = pick & (score >= (best - tol)[img])
        out.set_argmax(images[img[tie_mask]], pid[tie_mask], best[img[tie_mask]])
        return images[~decided & ~dense]

    @staticmethod
    def _kept_classes(rows: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image, class) pairs with P >= the image's threshold; flatnonzero + divmod: half a 2-D nonzero."""
        return np.divmod(np.flatnonzero(rows >= threshold[:, None]), rows.shape[1])

    def _predict_dense(self, probs, divisors, images: np.ndarray, out: _Output) -> None:
        """Images the ratio bound cannot decide: the compiled rank-threshold search when numba is there
        (exact; it ends in dense scoring at worst), else dense NumPy scoring of every partition."""
        k = out.k
        kernel = _kernel()
        chunk = max(1, _DENSE_CHUNK_ELEMENTS // max(self.partitions.n_partitions, 1))
        for lo in range(0, images.size, chunk):
            sub = images[lo : lo + chunk]
            if kernel is not None:
                self._ranked(kernel, probs, divisors, sub, out)
                continue
            s = self._dense_scores(probs, divisors, sub)
            best = s.max(axis=1)
            ties = s >= (best - self._tolerance(best))[:, None]
            rows, pid = np.nonzero(ties)
            out.set_argmax(sub[rows], pid, best[rows])
            top, top_scores = _top_k(s, k)
            ranks = np.broadcast_to(np.arange(k), top.shape)
            out.set_topk(np.repeat(sub, k), ranks.ravel(), top.ravel(), top_scores.ravel())

    def _class_index(self):
        """The (set, class) -> partitions CSR of every set as one (S, Kmax + 1) offset table and one array."""
        if self._index is None:
            parts = self.partitions
            kmax = max(parts.n_classes)
            ptr = np.zeros((len(parts.set_names), kmax + 1), dtype=np.int64)
            offset = 0
            for i, indptr in enumerate(parts.class_indptr):
                ptr[i, : indptr.size] = indptr + offset
                ptr[i, indptr.size :] = indptr[-1] + offset
                offset += int(indptr[-1])
            # The narrowest integers that hold the ids: a flat image's search reads these arrays at random,
            # and int16 class ids (int32 partition ids) halve the cache lines it touches.
            members = np.concatenate(parts.class_members).astype(_index_dtype(parts.n_partitions))
            # Each member's class tuple beside it, so scoring reads memory in CSR order.
            member_tuples = np.ascontiguousarray(parts.tuples[members], dtype=_index_dtype(kmax))
            self._index = (np.asarray(parts.n_classes, dtype=np.int64), member_tuples, ptr, members)
        return self._index

    def _ranked(self, kernel, probs, divisors, sub: np.ndarray, out: _Output) -> None:
        n_classes, tuples, ptr, members = self._class_index()
        # The probabilities as given, side by side (float32 stays float32: the kernel forms each term
        # float64(P_i) / z_i itself, as the dense scores do).
        dtype = np.result_type(*(p.dtype for p in probs))
        stacked = np.zeros((sub.size, len(probs), int(n_classes.max())), dtype=dtype)
        for i, p in enumerate(probs):
            stacked[:, i, : p.shape[1]] = p[sub]
        z = np.stack([d[sub] for d in divisors], axis=1)
        k = out.k
        best = np.empty(sub.size)
        top = np.empty((sub.size, k), dtype=np.int64)
        top_scores = np.empty((sub.size, k))
        tie_count = np.empty(sub.size, dtype=np.int64)
        tie_ids = np.empty((sub.size, self.partitions.n_partitions), dtype=np.int64)
        depth0 = max(k, int(n_classes.min()) // 128, 1)
        kernel.ranked_predict(
            stacked, z, n_classes, tuples, ptr, members, depth0, self.tie_rtol, best, top, top_scores, tie_count, tie_ids
        )
        rows = np.repeat(np.arange(sub.size), tie_count)
        pid = tie_ids[rows, np.arange(rows.size) - np.repeat(np.cumsum(tie_count) - tie_count, tie_count)]
        out.set_argmax(sub[rows], pid, best[rows])
        ranks = np.broadcast_to(np.arange(k), top.shape)
        out.set_topk(np.repeat(sub, k), ranks.ravel(), top.ravel(), top_scores.ravel())


def _index_dtype(n: int) -> type:
    """The narrowest signed integer type that holds the ids 0 .. n - 1."""
    return np.int16 if n <= np.iinfo(np.int16).max else np.int32 if n <= np.iinfo(np.int32).max else np.int64


def _top_k(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best columns: score descending, then column ascending (also among ties at the k-th
    score, which a bare argpartition would pick arbitrarily)."""
    n = s.shape[1]
    if k >= n:
        top = np.tile(np.arange(n), (s.shape[0], 1))
        order = np.lexsort((top, -s), axis=-1)
        return order, np.take_along_axis(s, order, axis=1)
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
    top = np.empty((s.shape[0], k), dtype=np.int64)
    for row, (scores, floor) in enumerate(zip(s, kth)):
        cols = np.flatnonzero(scores >= floor)  # ascending: every column that can be in the top k
        top[row] = cols[np.lexsort((cols, -scores[cols]))[:k]]
    return top, np.take_along_axis(s, top, axis=1)


def _kernel():
    """The compiled dense scoring (``partition_gen._combine_kernel``), or None when numba is missing."""
    try:
        from partition_gen import _combine_kernel
    except ImportError:  # the NumPy path gives the same answers, ~5x slower on flat probabilities
        return None
    return _combine_kernel


def _row_dot(p: np.ndarray, weights: np.ndarray, rows_per_chunk: int = 32) -> np.ndarray:
    """p @ weights in float64 for float32 p, converting a cache-sized block at a time (10x faster than a
    full float64 copy of a (256, 10000) batch, which spends its time faulting in fresh pages)."""
    if p.dtype == np.float64:
        return p @ weights
    out = np.empty(p.shape[0])
    block = np.empty((min(rows_per_chunk, p.shape[0]), p.shape[1]))
    for lo in range(0, p.shape[0], rows_per_chunk):
        chunk = p[lo : lo + rows_per_chunk]
        view = block[: chunk.shape[0]]
        np.copyto(view, chunk)
        out[lo : lo + chunk.shape[0]] = view @ weights
    return out


class _Output:
    """Accumulates per-image answers from the pruned and dense paths, in any order."""

    def __init__(self, batch: int, k: int):
        self.k = k
        self.topk_ids = np.full((batch, k), -1, dtype=np.int64)
        self.topk_scores = np.full((batch, k), np.nan)
        self.score = np.full(batch, np.nan)
        self._argmax_img: list[np.ndarray] = []
        self._argmax_pid: list[np.ndarray] = []

    def set_topk(self, img, rank, pid, score) -> None:
        self.topk_ids[img, rank] = pid
        self.topk_scores[img, rank] = score

    def set_argmax(self, img, pid, best) -> None:
        self._argmax_img.append(np.asarray(img, dtype=np.int64))
        self._argmax_pid.append(np.asarray(pid, dtype=np.int64))
        self.score[img] = best

    def finish(self, combiner: Combiner) -> BatchPrediction:
        parts = combiner.partitions
        batch = self.score.size
        img = np.concatenate(self._argmax_img) if self._argmax_img else np.zeros(0, np.int64)
        pid = np.concatenate(self._argmax_pid) if self._argmax_pid else np.zeros(0, np.int64)
        order = np.lexsort((pid, img))
        img, pid = img[order], pid[order]
        # Eq. 4 over all tied partitions: sum their image unit-vector sums, then project to the sphere.
        xyz = np.stack([np.bincount(img, weights=parts.xyz_sum[pid, a], minlength=batch) for a in range(3)], axis=1)
        fallback = np.stack(
            [np.bincount(img, weights=parts.node_center_sum[pid, a], minlength=batch) for a in range(3)], axis=1
        )
        empty = np.linalg.norm(xyz, axis=1) <= 1e-12
        xyz[empty] = fallback[empty]
        lat, lng = xyz_to_latlng(xyz)
        bounds = np.searchsorted(img, np.arange(batch + 1))
        argmax = [pid[bounds[b] : bounds[b + 1]] for b in range(batch)]
        valid = self.topk_ids >= 0
        safe = np.where(valid, self.topk_ids, 0)
        topk_lat = np.where(valid, combiner._center_lat[safe], np.nan)
        topk_lng = np.where(valid, combiner._center_lng[safe], np.nan)
        return BatchPrediction(
            lat=lat,
            lng=lng,
            score=self.score,
            n_argmax=np.diff(bounds),
            topk_ids=self.topk_ids,
            topk_scores=self.topk_scores,
            topk_lat=topk_lat,
            topk_lng=topk_lng,
            argmax_partitions=argmax,
        )


@dataclass(frozen=True)
class Method:
    """A prediction method: which sets, and how they are combined (one set: its arg-max class)."""

    name: str
    set_names: tuple[str, ...]
    rule: str = NORMALIZED_SUM

    def combiner(self, partitions: Partitions, top_k: int = 5) -> Combiner:
        rule = SIMPLE_SUM if len(self.set_names) == 1 else self.rule
        return Combiner(partitions.restrict(self.set_names), rule=rule, top_k=top_k)


def node_scores_reference(
    node_classes: Mapping[str, np.ndarray], probabilities: Mapping[str, np.ndarray], rule: str = NORMALIZED_SUM
) -> np.ndarray:
    """Eq. 3 evaluated per node (B, N): the dense definition the partition combiner must reproduce.

    Used by the benchmark as the baseline and by tests; cost is O(B * N * sets).
    """
    total = None
    for name, classes in node_classes.items():
        p = np.asarray(probabilities[name], dtype=np.float64)
        per_node = p[:, classes]
        if rule == NORMALIZED_SUM:
            per_node = per_node / per_node.sum(axis=1, keepdims=True)
        total = per_node if total is None else total + per_node
    return total
