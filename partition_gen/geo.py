"""Vectorized spherical geometry: lat/lng <-> unit vectors, great-circle distances, location means.

Pure NumPy. Every mean of locations goes through unit vectors (never a mean of raw lat/lng), as the paper
requires for partition centres (Section 4.2).
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0


def latlng_to_xyz(lat_deg, lng_deg) -> np.ndarray:
    """Unit vectors, shape (..., 3), for latitudes and longitudes in degrees."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lng = np.radians(np.asarray(lng_deg, dtype=np.float64))
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lng), cos_lat * np.sin(lng), np.sin(lat)], axis=-1)


def xyz_to_latlng(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude in degrees of (not necessarily unit) vectors, shape (..., 3).

    A zero vector (e.g. the mean of two antipodal points) has no direction; it maps to (0, 0) and callers
    that can meet it must handle it.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lng = np.degrees(np.arctan2(y, x))
    return lat, lng


def haversine_km(lat1, lng1, lat2, lng2) -> np.ndarray:
    """Great-circle distance in km (haversine, R = 6371 km), broadcasting over its arguments."""
    lat1, lng1, lat2, lng2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lng1, lat2, lng2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def mean_location(lat_deg, lng_deg, weights=None) -> tuple[float, float]:
    """The (weighted) mean location of points on the sphere, through their unit vectors."""
    xyz = latlng_to_xyz(lat_deg, lng_deg)
    if weights is None:
        total = xyz.sum(axis=0)
    else:
        total = (np.asarray(weights, dtype=np.float64)[:, None] * xyz).sum(axis=0)
    lat, lng = xyz_to_latlng(total)
    return float(lat), float(lng)


def xyz_sum_to_latlng(x_sum, y_sum, z_sum) -> tuple[np.ndarray, np.ndarray]:
    """Centres from stored xyz sums (cells, classes, partitions): normalise and project to the sphere."""
    return xyz_to_latlng(np.stack([np.asarray(x_sum), np.asarray(y_sum), np.asarray(z_sum)], axis=-1))
