"""Compiled (Numba) dense partition scoring for ``partition_gen.combine`` (flat probabilities).

``dense_scores_topk`` scores every partition of a chunk of images in one fused pass: score[b, p] =
sum_i q[b, i, T[p, i]] with the terms added in set order, exactly as the NumPy path adds its per-set
(images x partitions) terms (q = float64(P_i) / z_i is formed by the caller, as the NumPy path forms each
term), so the scores are bit for bit the same. In the same pass it keeps each image's best score and its
top-k (score descending, then partition id ascending), the order the NumPy path's lexsort gives.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def dense_scores_topk(q, tuples, scores, best, top_ids, top_scores):
    n_img, n_sets = q.shape[0], q.shape[1]
    n_parts = tuples.shape[0]
    k = top_ids.shape[1]
    for b in range(n_img):
        top_ids[b, :] = -1
        top_scores[b, :] = -np.inf
        filled = 0
        hi = -np.inf
        for p in range(n_parts):
            s = q[b, 0, tuples[p, 0]]
            for i in range(1, n_sets):
                s += q[b, i, tuples[p, i]]
            scores[b, p] = s
            if s > hi:
                hi = s
            # Partitions come in ascending id, so an equal score never displaces an earlier id.
            if filled < k or s > top_scores[b, k - 1]:
                pos = filled if filled < k else k - 1
                while pos > 0 and s > top_scores[b, pos - 1]:
                    if pos < k:
                        top_scores[b, pos] = top_scores[b, pos - 1]
                        top_ids[b, pos] = top_ids[b, pos - 1]
                    pos -= 1
                top_scores[b, pos] = s
                top_ids[b, pos] = p
                if filled < k:
                    filled += 1
        best[b] = hi
