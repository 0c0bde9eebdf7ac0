"""Compiled (Numba) search for ``partition_gen.combine``: images whose probabilities are too flat for the
ratio bound (an untrained or uncertain model) without scoring every partition.

A partition's score is sum_i float64(P_i[b, T[p, i]]) / z_i[b] with the terms added in set order, formed
exactly as the NumPy path forms and adds its per-set terms, so every score is bit for bit the dense one; the top-k order is score descending, then partition id
ascending, as the NumPy path's lexsort gives. Fagin's threshold algorithm over per-set rank cut-offs
decides which partitions need a score at all.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _before(s1, p1, s2, p2):
    """(score, partition) order of the top-k: higher score first, then lower partition id."""
    return s1 > s2 or (s1 == s2 and p1 < p2)


@njit(cache=True, nogil=True, error_model="numpy")
def ranked_predict(p, z, n_classes, member_tuples, cls_ptr, members, depth0, tie_rtol,
                   best, top_ids, top_scores, tie_count, tie_ids):  # fmt: skip
    """Exact arg-max set and top-k of each image by a rank threshold, for rows the ratio bound cannot prune.

    Per image: in each set i keep the classes whose P is at least the ``depth``-th largest P of that set
    (``thr_i``, read from every 8th class: any threshold keeps the answer exact, since the bound is formed
    from the very values used), score every partition inside a kept class, and bound every other one by
    B = sum_i float64(thr_i) / z_i (dividing by z_i > 0 keeps the order of P, so each of its terms is at
    most the threshold's term; the sum is formed in set order like the scores, and float addition is
    monotone). When the k-th best candidate is > B and the best exceeds B by more than the tie tolerance,
    the top-k and the tie set are exact; else ``depth`` grows. At depth >= K_i every class is kept, so the
    last round is the dense answer.

    ``p`` (B, S, Kmax) holds the probabilities as given (float32 or float64; the terms are divided here
    rather than in a float64 copy, which would be twice the memory a flat image's search reads at random),
    ``z`` (B, S) the float64 divisors; ``cls_ptr`` (S, Kmax + 1) and ``members`` are the (set, class) ->
    partitions CSR with offsets into one array, and ``member_tuples[j]`` the class tuple of partition
    ``members[j]`` (read in CSR order, not at random). Writes best, top-k, and the arg-max ties (ids
    ascending) into ``tie_ids[b, :tie_count[b]]``.
    """
    n_img, n_sets = p.shape[0], p.shape[1]
    n_parts = tie_ids.shape[1]
    k = top_ids.shape[1]
    # Per set, every 8th class's P, negated and sorted at its head: the threshold of a depth is one lookup.
    ranked = np.empty((n_sets, p.shape[2] // 8 + 1))
    n_sample = np.empty(n_sets, dtype=np.int64)
    n_sorted = np.empty(n_sets, dtype=np.int64)
    mark = np.zeros(n_parts, dtype=np.uint8)
    cand = np.empty(n_parts, dtype=np.int64)
    score = np.empty(n_parts)
    thr = np.empty(n_sets)
    scanned = np.empty(n_sets)  # each set's threshold of the classes opened so far
    for b in range(n_img):
        zb = z[b]
        for i in range(n_sets):
            m_i = 0
            for cls in range(0, n_classes[i], 8):
                ranked[i, m_i] = -np.float64(p[b, i, cls])
                m_i += 1
            n_sample[i] = m_i
            n_sorted[i] = _sort_head(ranked[i, :m_i], _SORTED_HEAD)
        depth = depth0
        n_cand = 0
        hi = -np.inf
        filled = 0
        for i in range(n_sets):
            scanned[i] = np.inf
        while True:
            everything = _thresholds(ranked, n_sample, n_sorted, n_classes, depth, thr)
            # Thresholds only fall from round to round: the classes to open are those between this round's
            # threshold and the last one's; the partitions of the others are already candidates.
            first_new = n_cand
            for i in range(n_sets):
                t, above = thr[i], scanned[i]
                for cls in range(n_classes[i]):
                    v = p[b, i, cls]
                    if v >= t and v < above:
                        for j in range(cls_ptr[i, cls], cls_ptr[i, cls + 1]):
                            m = members[j]
                            if mark[m] == 0:
                                mark[m] = 1
                                cand[n_cand] = m
                                s = np.float64(p[b, 0, member_tuples[j, 0]]) / zb[0]
                                for i2 in range(1, n_sets):
                                    s += np.float64(p[b, i2, member_tuples[j, i2]]) / zb[i2]
                                score[n_cand] = s
                                n_cand += 1
                scanned[i] = t
            # Best and top-k, updated with this round's new candidates.
            for j in range(first_new, n_cand):
                s, m = score[j], cand[j]
                if s > hi:
                    hi = s
                if filled < k or _before(s, m, top_scores[b, k - 1], top_ids[b, k - 1]):
                    pos = filled if filled < k else k - 1
                    while pos > 0 and _before(s, m, top_scores[b, pos - 1], top_ids[b, pos - 1]):
                        top_scores[b, pos] = top_scores[b, pos - 1]
                        top_ids[b, pos] = top_ids[b, pos - 1]
                        pos -= 1
                    top_scores[b, pos] = s
                    top_ids[b, pos] = m
                    if filled < k:
                        filled += 1
            if everything or n_cand == n_parts:
                break
            bound = thr[0] / zb[0]
            for i in range(1, n_sets):
                bound += thr[i] / zb[i]
            if filled == k and top_scores[b, k - 1] > bound and bound < hi - tie_rtol * abs(hi):
                break
            depth = _next_depth(ranked, n_sample, n_sorted, n_classes, depth, thr, zb, filled == k,
                                min(top_scores[b, k - 1], hi - tie_rtol * abs(hi)))  # fmt: skip
        best[b] = hi
        low = hi - tie_rtol * abs(hi)
        count = 0
        for j in range(n_cand):
            if score[j] >= low:
                tie_ids[b, count] = cand[j]
                count += 1
        tie_count[b] = count
        tie_ids[b, :count].sort()
        for j in range(n_cand):
            mark[cand[j]] = 0


# Ranks sorted up front: most images stop within 8 * 192 classes of each set; a full sort of every 8th
# class costed a third of a flat image's time.
_SORTED_HEAD = 192


@njit(cache=True, nogil=True)
def _sort_head(values, head):
    """Sort the ``head`` smallest of ``values`` in place at its front; return how many are sorted."""
    if head >= values.size:
        values[:] = np.sort(values)
        return values.size
    values[:] = np.partition(values, head - 1)
    values[:head] = np.sort(values[:head])
    return head


@njit(cache=True, nogil=True)
def _thresholds(ranked, n_sample, n_sorted, n_classes, depth, thr):
    """Each set's class threshold at ``depth`` (-inf keeps every class); True when every set keeps all."""
    everything = True
    for i in range(thr.size):
        if depth >= n_classes[i]:
            thr[i] = -np.inf
        else:
            everything = False
            rank = min(n_sample[i], max(1, depth // 8))
            if rank > n_sorted[i]:  # deeper than the sorted head: sort the rest once
                n_sorted[i] = _sort_head(ranked[i, : n_sample[i]], n_sample[i])
            thr[i] = -ranked[i, rank - 1]
    return everything


@njit(cache=True, nogil=True, error_model="numpy")
def _next_depth(ranked, n_sample, n_sorted, n_classes, depth, thr, zb, have_k, target):
    """The next round's depth: the first (1.25-fold steps) whose bound falls below ``target``, the k-th
    best score found so far (it can only rise as candidates are added, so that round ends the search
    unless ties need more); 4-fold while fewer than k candidates are known."""
    if not have_k:
        return depth * 4
    deepest = 0
    for i in range(n_classes.size):
        deepest = max(deepest, n_classes[i])
    while depth < deepest:
        depth = max(depth + 8, depth * 5 // 4)
        _thresholds(ranked, n_sample, n_sorted, n_classes, depth, thr)
        bound = thr[0] / zb[0]
        for i in range(1, thr.size):
            bound += thr[i] / zb[i]
        if bound < target:
            return depth
    return depth


@njit(cache=True, nogil=True)
def kept_partitions(rows, threshold, class_counts):
    """Per image, the partitions inside its classes with P >= threshold (the pruned path's candidate
    count, before any candidate is listed)."""
    out = np.zeros(rows.shape[0], dtype=np.int64)
    for b in range(rows.shape[0]):
        t = threshold[b]
        total = 0
        for cls in range(rows.shape[1]):
            if rows[b, cls] >= t:
                total += class_counts[cls]
        out[b] = total
    return out
