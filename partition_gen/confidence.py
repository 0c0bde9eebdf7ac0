"""A confidence radius per prediction: radius50_km and radius90_km, calibrated on the eval split.

What the combiner knows about a photo says how far off it is likely to be: the score share of the top
partition among the top k, the entropy of the top-k scores, how many heads' arg-max classes agree with the
top partition, the heads' mean top probability, and for a refined method whether it moved and how similar
the neighbour was. ``fit`` regresses log(1 + error km) on these features (least squares) to get one
difficulty score, cuts the eval photos into equal-count bins of that score, and keeps each bin's 50 % and
90 % error quantiles. ``radii`` looks a new photo's bin up. The shares hold within every bin of the eval
split by construction; on other photos they hold as far as the features capture difficulty.

NumPy only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

FEATURE_NAMES = (
    "top_share", "topk_entropy", "head_agreement", "mean_head_max_p", "moved", "neighbour_similarity",
)  # fmt: skip
DEFAULT_BINS = 10
CONFIDENCE_FILE = "confidence.json"
QUANTILES = (0.5, 0.9)


def combiner_features(
    topk_ids: np.ndarray,
    topk_scores: np.ndarray,
    tuples: np.ndarray,
    head_probabilities: Sequence[np.ndarray],
    moved: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> np.ndarray:
    """(B, 6) features of a batch (see FEATURE_NAMES); ``tuples`` are the method's partition tuples and
    ``head_probabilities`` its heads' (B, K_i) probabilities in the same set order."""
    scores = np.nan_to_num(np.asarray(topk_scores, dtype=np.float64), nan=0.0)
    scores = np.maximum(scores, 0.0)
    total = scores.sum(axis=1)
    safe_total = np.where(total > 0, total, 1.0)
    share = np.where(total > 0, scores[:, 0] / safe_total, 1.0)
    p = scores / safe_total[:, None]
    entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
    top = np.asarray(topk_ids)[:, 0]
    top_tuple = tuples[np.maximum(top, 0)]
    agree = np.mean(
        [np.argmax(np.asarray(probs), axis=1) == top_tuple[:, i] for i, probs in enumerate(head_probabilities)], axis=0
    )
    max_p = np.mean([np.asarray(probs).max(axis=1) for probs in head_probabilities], axis=0)
    n = len(top)
    features = np.stack([share, entropy, agree, max_p, np.zeros(n), np.zeros(n)], axis=1)
    return features if moved is None else with_refinement(features, moved, similarity)


def with_refinement(features: np.ndarray, moved: np.ndarray, similarity: np.ndarray | None) -> np.ndarray:
    """The features of a refined prediction: the combiner's own (moved and similarity zero) with the
    refinement's two columns filled in, so callers need not keep the heads' probabilities around."""
    moved_f = np.asarray(moved, dtype=np.float64)
    sim = np.zeros(len(moved_f)) if similarity is None else np.asarray(similarity, dtype=np.float64)
    out = np.array(features, dtype=np.float64, copy=True)
    out[:, 4] = moved_f
    out[:, 5] = np.where(np.isfinite(sim), sim, -1.0) * moved_f
    return out


@dataclass(frozen=True)
class Calibration:
    coef: np.ndarray  # (F + 1,) intercept first
    edges: np.ndarray  # (bins - 1,) inner bin edges of the difficulty score
    radius50_km: np.ndarray  # (bins,)
    radius90_km: np.ndarray  # (bins,)
    n: int

    def difficulty(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        return self.coef[0] + x @ self.coef[1:]

    def radii(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.searchsorted(self.edges, self.difficulty(features), side="right")
        return self.radius50_km[b], self.radius90_km[b]

    def to_json(self) -> dict:
        return {"coef": self.coef.tolist(), "edges": self.edges.tolist(), "radius50_km": self.radius50_km.tolist(),
                "radius90_km": self.radius90_km.tolist(), "n": self.n, "features": list(FEATURE_NAMES)}

    @classmethod
    def from_json(cls, doc: Mapping) -> Calibration:
        return cls(np.asarray(doc["coef"], float), np.asarray(doc["edges"], float),
                   np.asarray(doc["radius50_km"], float), np.asarray(doc["radius90_km"], float), int(doc["n"]))


def fit(features: np.ndarray, errors_km: np.ndarray, bins: int = DEFAULT_BINS) -> Calibration:
    """Calibrate on held-out photos: ``features`` (n, F), their errors in km."""
    x = np.asarray(features, dtype=np.float64)
    err = np.asarray(errors_km, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(err) or len(err) == 0:
        raise ValueError(f"need features (n, F) and n errors, got {x.shape} and {err.shape}")
    if not np.isfinite(x).all() or not np.isfinite(err).all():
        raise ValueError("features and errors must be finite")
    design = np.concatenate([np.ones((len(x), 1)), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.log1p(err), rcond=None)
    score = design @ coef
    bins = int(max(1, min(bins, len(err) // 20 or 1)))
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, score, side="right")
    r50, r90 = np.empty(len(edges) + 1), np.empty(len(edges) + 1)
    for b in range(len(edges) + 1):
        e = err[which == b]
        if e.size == 0:  # cannot happen with quantile edges, kept for safety: fall back to all photos
            e = err
        r50[b], r90[b] = np.quantile(e, QUANTILES, method="higher")
    return Calibration(coef, edges, r50, r90, int(len(err)))


def coverage(errors_km: np.ndarray, radius_km: np.ndarray) -> float:
    """Share of photos whose error is within their radius."""
    err = np.asarray(errors_km, dtype=np.float64)
    return float(np.mean(err <= np.asarray(radius_km, dtype=np.float64))) if err.size else float("nan")


def write_calibrations(directory: str, calibrations: Mapping[str, Calibration]) -> None:
    """``confidence.json`` in ``directory`` (a model's ``refine/``; local or gs://)."""
    from schemas import artifacts

    text = json.dumps({name: cal.to_json() for name, cal in calibrations.items()}, indent=1) + "\n"
    artifacts.write_bytes(artifacts.join(directory, CONFIDENCE_FILE), text.encode())


def load_calibrations(directory: str) -> dict[str, Calibration]:
    """{method name: Calibration} of a refinement directory (a model's ``refine/``, see
    ``partition_gen.refine.index_dir``): its ``confidence.json``; empty without one."""
    from schemas.io import join_path, path_exists, read_bytes

    path = join_path(directory, CONFIDENCE_FILE)
    if not path_exists(path):
        return {}
    doc = json.loads(read_bytes(path).decode())
    return {name: Calibration.from_json(entry) for name, entry in doc.items()}
