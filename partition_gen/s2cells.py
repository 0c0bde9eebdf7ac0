"""S2 cell ids for NumPy arrays of points (placeholder: per-point s2sphere loop; vectorized core to come).

Public API (stable): latlng_to_cell_ids, cell_ids_to_tokens, tokens_to_cell_ids, parent_cell_ids,
cell_levels, cell_center_latlng.
"""

from __future__ import annotations

import numpy as np
import s2sphere


def latlng_to_cell_ids(lat_deg, lng_deg, level: int = 14) -> np.ndarray:
    lat = np.asarray(lat_deg, dtype=np.float64).ravel()
    lng = np.asarray(lng_deg, dtype=np.float64).ravel()
    out = np.empty(lat.shape, dtype=np.uint64)
    for i in range(lat.size):
        cid = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat[i], lng[i])).parent(level)
        out[i] = cid.id()
    return out


def cell_ids_to_tokens(cell_ids) -> list[str]:
    return [s2sphere.CellId(int(i)).to_token() for i in np.asarray(cell_ids, dtype=np.uint64)]


def tokens_to_cell_ids(tokens) -> np.ndarray:
    return np.array([s2sphere.CellId.from_token(t).id() for t in tokens], dtype=np.uint64)


def parent_cell_ids(cell_ids, level: int) -> np.ndarray:
    ids = np.asarray(cell_ids, dtype=np.uint64)
    lsb = np.uint64(1) << np.uint64(2 * (30 - level))
    return (ids & ~(lsb - np.uint64(1)) & ~lsb) | lsb


def cell_levels(cell_ids) -> np.ndarray:
    return np.array([s2sphere.CellId(int(i)).level() for i in np.asarray(cell_ids, dtype=np.uint64)], dtype=np.int8)


def cell_center_latlng(cell_ids) -> tuple[np.ndarray, np.ndarray]:
    lat, lng = [], []
    for i in np.asarray(cell_ids, dtype=np.uint64):
        ll = s2sphere.CellId(int(i)).to_lat_lng()
        lat.append(ll.lat().degrees)
        lng.append(ll.lng().degrees)
    return np.array(lat), np.array(lng)
