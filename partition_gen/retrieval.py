"""Baselines that need no geoclasses: kNN retrieval (the paper's Deep-Ret analogue) and the prior only.

kNN retrieval (Deep-Ret, Vo et al. 2017, in the paper's Tables 2-3) geolocates a photo by the locations
of the training photos whose features are most similar to its own:

- ``k = 1``: the location of the cosine-nearest training photo;
- ``k > 1``: the *location mode* of the k nearest: each neighbour is scored by a Gaussian kernel density
  of the k neighbour locations at its own location (bandwidth ``bandwidth_km``, great-circle distance),
  and the best-scored neighbour's location is the prediction (ties go to the more similar neighbour).
  Predicting a real photo location (rather than a mean) keeps the answer on land and on a place.

Cosine similarity is a float32 matrix product computed in blocks of test rows, so the memory held at once
is about ``max_block_elements`` floats whatever the sizes (100k train x 3k test x 128-d takes ~64 MiB).

The prior-only baseline ignores the photo and always predicts the densest place of the training set,
defined as **the training photo with the most training photos within 25 km** (itself included; ties go
to the lowest index). A photo rather than an S2 cell centre: the answer is a real, populated place and
does not depend on how a cell grid happens to cut a city. It is found exactly with a 3-D grid on unit
vectors whose cell edge is the chord of the radius: every pair within the radius lies in neighbouring
grid cells, the 27-cell counts bound each cell's best count from above, and cells are counted exactly in
order of that bound until no remaining bound can beat the best count.

NumPy only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from partition_gen.geo import EARTH_RADIUS_KM, haversine_km, latlng_to_xyz

log = logging.getLogger(__name__)

DEFAULT_BLOCK_ELEMENTS = 1 << 24
DEFAULT_BANDWIDTH_KM = 25.0
DENSEST_RADIUS_KM = 25.0


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (photos x dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        row = int(np.argmax(~np.isfinite(x).all(axis=1)))
        raise ValueError(f"{name} row {row} holds NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector has no direction; it gets similarity 0 to everything instead of NaN.
    return x / np.maximum(norms, np.float32(1e-12))


def nearest_neighbours(
    train_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    k: int = 1,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """The k cosine-nearest training rows of each test row: (indices int64 (m, k), similarities (m, k)).

    Rows are ordered by descending similarity (equal similarities by ascending training index).
    """
    train = _unit_rows(train_embeddings, "train embeddings")
    test = _unit_rows(test_embeddings, "test embeddings")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"embedding sizes differ: train {train.shape[1]}, test {test.shape[1]}")
    n = train.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the training photos), got {k}")
    m = test.shape[0]
    indices = np.empty((m, k), dtype=np.int64)
    similarities = np.empty((m, k), dtype=np.float32)
    rows = max(1, max_block_elements // n)
    for start in range(0, m, rows):
        sims = test[start : start + rows] @ train.T
        if k == 1:
            top = np.argmax(sims, axis=1)[:, None]
        else:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.lexsort((top, -top_sims), axis=1)
            top = np.take_along_axis(top, order, axis=1)
        indices[start : start + rows] = top
        similarities[start : start + rows] = np.take_along_axis(sims, top, axis=1)
    return indices, similarities


def location_mode(
    neighbour_lat: np.ndarray, neighbour_lng: np.ndarray, bandwidth_km: float = DEFAULT_BANDWIDTH_KM
) -> np.ndarray:
    """Per row of neighbours (m, k): the column whose location has the highest kernel density among the row."""
    if bandwidth_km <= 0:
        raise ValueError(f"bandwidth_km must be positive, got {bandwidth_km}")
    lat = np.asarray(neighbour_lat, dtype=np.float64)
    lng = np.asarray(neighbour_lng, dtype=np.float64)
    d = haversine_km(lat[:, :, None], lng[:, :, None], lat[:, None, :], lng[:, None, :])
    density = np.exp(-0.5 * (d / bandwidth_km) ** 2).sum(axis=2)
    # argmax returns the first maximum, i.e. the most similar of equally dense neighbours.
    return np.argmax(density, axis=1)


def knn_predict(
    train_embeddings: np.ndarray,
    train_lat,
    train_lng,
    test_embeddings: np.ndarray,
    k: int = 1,
    bandwidth_km: float = DEFAULT_BANDWIDTH_KM,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (lat, lng) per test photo: the nearest neighbour's location (k=1) or the kNN location mode."""
    train_lat = np.asarray(train_lat, dtype=np.float64)
    train_lng = np.asarray(train_lng, dtype=np.float64)
    if not len(train_lat) == len(train_lng) == len(train_embeddings):
        raise ValueError(
            f"training arrays differ in length: lat {len(train_lat)}, lng {len(train_lng)}, "
            f"embeddings {len(train_embeddings)}"
        )
    indices, _ = nearest_neighbours(train_embeddings, test_embeddings, k, max_block_elements)
    if k > 1:
        pick = location_mode(train_lat[indices], train_lng[indices], bandwidth_km)
        chosen = indices[np.arange(len(indices)), pick]
    else:
        chosen = indices[:, 0]
    log.info(
        "kNN retrieval (k=%d): %d test photos against %d training photos", k, len(chosen), len(train_lat)
    )
    return train_lat[chosen], train_lng[chosen]


@dataclass(frozen=True)
class DensestPlace:
    """The prior-only baseline's answer: a training photo and how many training photos lie within the radius."""

    lat: float
    lng: float
    index: int
    n_within: int
    radius_km: float

    def predict(self, n_photos: int) -> tuple[np.ndarray, np.ndarray]:
        """The same location for every one of n_photos test photos."""
        return np.full(n_photos, self.lat), np.full(n_photos, self.lng)


_OFFSETS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.int64)
_BITS = 21


def _pack_cells(cells: np.ndarray) -> np.ndarray:
    shifted = cells + (1 << (_BITS - 1))
    return (shifted[..., 0] << (2 * _BITS)) | (shifted[..., 1] << _BITS) | shifted[..., 2]


def prior_only_baseline(
    train_lat,
    train_lng,
    radius_km: float = DENSEST_RADIUS_KM,
    max_block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> DensestPlace:
    """The training photo with the most training photos within radius_km (see the module docstring)."""
    lat = np.asarray(train_lat, dtype=np.float64).ravel()
    lng = np.asarray(train_lng, dtype=np.float64).ravel()
    if lat.size == 0 or lat.size != lng.size:
        raise ValueError(f"need equally long, non-empty lat/lng; got {lat.size} and {lng.size}")
    if not np.isfinite(lat).all() or not np.isfinite(lng).all():
        raise ValueError("train_lat/train_lng hold NaN or inf")
    if radius_km <= 0:
        raise ValueError(f"radius_km must be positive, got {radius_km}")
    xyz = latlng_to_xyz(lat, lng)
    min_dot = np.cos(min(radius_km / EARTH_RADIUS_KM, np.pi))
    chord = np.sqrt(max(2.0 - 2.0 * min_dot, 0.0))
    # 21-bit grid coordinates: cells no smaller than 2/2^20 of the radius-1 sphere (a larger cell only
    # loosens the bound, never the exactness).
    edge = max(chord, 4.0 / (1 << _BITS))
    cells = np.floor(xyz / edge).astype(np.int64)
    keys = _pack_cells(cells)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cell_keys, starts, counts = np.unique(sorted_keys, return_index=True, return_counts=True)
    cell_coords = cells[order[starts]]

    neighbour_keys = _pack_cells(cell_coords[:, None, :] + _OFFSETS[None])  # (cells, 27)
    slot = np.searchsorted(cell_keys, neighbour_keys).clip(max=len(cell_keys) - 1)
    present = cell_keys[slot] == neighbour_keys
    bound = np.where(present, counts[slot], 0).sum(axis=1)

    best_count, best_index = -1, -1
    visited = 0
    for cell in np.argsort(-bound, kind="stable"):
        if bound[cell] < best_count:
            break
        visited += 1
        members = order[starts[cell] : starts[cell] + counts[cell]]
        near = slot[cell][present[cell]]
        candidates = np.concatenate([order[starts[j] : starts[j] + counts[j]] for j in near])
        rows = max(1, max_block_elements // len(candidates))
        for start in range(0, len(members), rows):
            block = members[start : start + rows]
            within = ((xyz[block] @ xyz[candidates].T) >= min_dot).sum(axis=1)
            top = int(within.max())
            best_here = int(block[within == top].min())
            if top > best_count or (top == best_count and best_index > best_here):
                best_count, best_index = top, best_here
    log.info(
        "densest place: training photo %d with %d photos within %.0f km (%d of %d grid cells counted)",
        best_index,
        best_count,
        radius_km,
        visited,
        len(cell_keys),
    )
    return DensestPlace(
        float(lat[best_index]), float(lng[best_index]), best_index, best_count, float(radius_km)
    )
