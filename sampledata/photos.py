"""Simulated photos: embeddings at given locations from the feature model (see :mod:`sampledata`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from partition_gen.geo import EARTH_RADIUS_KM
from sampledata.field import BLOCK, STREAM_PHOTOS, FeatureModel, LocationField


@dataclass
class SimulatedPhotos:
    embeddings: np.ndarray  # float32 (n, dim)
    indoor: np.ndarray  # bool (n,)


def simulate_photos_detailed(
    lat,
    lng,
    seed: int,
    model: FeatureModel | None = None,
    *,
    indoor: np.ndarray | None = None,
    photo_stream: int = 0,
    field: LocationField | None = None,
    progress: bool = False,
) -> SimulatedPhotos:
    """Simulated embeddings and the indoor flags behind them (see :mod:`sampledata` for the model).

    ``photo_stream`` picks an independent stream of per-photo draws (noise, indoor flags): photo sets that
    must not share noise (train and test) need different streams, while all sets of one seed share the
    location field. ``indoor`` (bool per photo) overrides the random indoor draw. ``field`` reuses a built
    :class:`LocationField` (for the same seed); its model is then the model.
    """
    lat = np.ravel(np.asarray(lat, dtype=np.float64))
    lng = np.ravel(np.asarray(lng, dtype=np.float64))
    if lat.shape != lng.shape:
        raise ValueError(f"lat and lng differ in length: {lat.size} vs {lng.size}")
    bad = ~np.isfinite(lat) | ~np.isfinite(lng) | (np.abs(lat) > 90) | (np.abs(lng) > 180)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"photo {i} has an invalid location lat={lat[i]} lng={lng[i]}")
    if field is None:
        field = LocationField(seed, model)
    elif model is not None and model != field.model:
        raise ValueError("simulate_photos: model differs from the model of the given field")
    model = field.model
    dim, signal_share = field.dim, model.signal_share
    n = lat.size

    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_PHOTOS, photo_stream]))
    )
    drawn_indoor = rng.random(n) < model.indoor_share
    if indoor is None:
        indoor = drawn_indoor
    else:
        indoor = np.ravel(np.asarray(indoor, dtype=bool))
        if indoor.size != n:
            raise ValueError(f"indoor has {indoor.size} flags for {n} photos")

    embeddings = field.signal(lat, lng, progress=progress)
    signal_scale = np.float32(math.sqrt(signal_share * dim))
    noise_scale = np.float32(math.sqrt(1.0 - signal_share))
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block = embeddings[start:stop]
        block *= signal_scale
        block += noise_scale * noise
        inside = indoor[start:stop]
        block[inside] = noise[inside]
    return SimulatedPhotos(embeddings=embeddings, indoor=indoor)


def simulate_photos(lat, lng, seed: int, model: FeatureModel | None = None, **options) -> np.ndarray:
    """Simulated embeddings, float32 (n, dim). Options as :func:`simulate_photos_detailed`."""
    return simulate_photos_detailed(lat, lng, seed, model, **options).embeddings


def jitter_locations(lat, lng, sigma_m: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move each point by N(0, sigma_m) metres east and north (so shared coordinates stop coinciding)."""
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    north_km, east_km = rng.normal(0.0, sigma_m / 1000.0, size=(2, lat.size))
    km_per_degree = math.pi * EARTH_RADIUS_KM / 180.0
    new_lat = np.clip(lat + north_km / km_per_degree, -90.0, 90.0)
    cos_lat = np.maximum(np.cos(np.radians(new_lat)), 1e-6)
    new_lng = (lng + east_km / (km_per_degree * cos_lat) + 180.0) % 360.0 - 180.0
    return new_lat, new_lng
