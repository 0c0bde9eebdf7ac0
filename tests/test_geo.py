"""Spherical helpers of partition_gen.geo against independent formulas and published distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partition_gen import geo

R = geo.EARTH_RADIUS_KM


def vincenty_sphere_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance by the Vincenty (atan2) formula: well conditioned at all distances."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lng2 - lng1)
    num = math.hypot(math.cos(p2) * math.sin(dl), math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl))
    den = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return R * math.atan2(num, den)


def law_of_cosines_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lng2 - lng1)
    cos_angle = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return R * math.acos(max(-1.0, min(1.0, cos_angle)))


def random_pairs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, (2, n))))
    lng = rng.uniform(-180, 180, (2, n))
    return np.stack([lat[0], lng[0], lat[1], lng[1]])


@pytest.mark.parametrize(
    "a, b, km",
    [
        # Published great-circle distances for R = 6371 km (e.g. the movable-type.co.uk haversine examples).
        ((51.5007, -0.1246), (40.6892, -74.0445), 5574.8),  # Big Ben - Statue of Liberty
        ((51.5074, -0.1278), (48.8566, 2.3522), 343.6),  # London - Paris
        ((40.7128, -74.0060), (34.0522, -118.2437), 3935.7),  # New York - Los Angeles
    ],
)
def test_haversine_on_known_city_pairs(a, b, km):
    assert geo.haversine_km(*a, *b) == pytest.approx(km, abs=0.15)
    assert geo.haversine_km(*a, *b) == pytest.approx(vincenty_sphere_km(*a, *b), rel=1e-12)


def test_haversine_matches_independent_formulas_on_random_pairs():
    pairs = random_pairs(20_000, 1)
    got = geo.haversine_km(*pairs)
    vincenty = np.array([vincenty_sphere_km(*p) for p in pairs.T])
    cosines = np.array([law_of_cosines_km(*p) for p in pairs.T])
    np.testing.assert_allclose(got, vincenty, rtol=1e-9, atol=1e-9)
    # The law of cosines loses digits for short arcs; random pairs are long, so 1 m is plenty.
    np.testing.assert_allclose(got, cosines, rtol=0, atol=1e-3)


def test_haversine_short_distances_stay_accurate():
    lat, lng = 48.0, 11.0
    for metres in (0.01, 1.0, 100.0):
        dlat = math.degrees(metres / 1000 / R)
        assert geo.haversine_km(lat, lng, lat + dlat, lng) * 1000 == pytest.approx(metres, rel=1e-7)
    assert geo.haversine_km(lat, lng, lat, lng) == 0.0


def test_antipodes_are_half_a_circumference_apart():
    rng = np.random.default_rng(2)
    lat, lng = rng.uniform(-90, 90, 1000), rng.uniform(-180, 180, 1000)
    anti_lng = np.where(lng > 0, lng - 180, lng + 180)
    # Near h = 1 the arcsine amplifies rounding to ~sqrt(eps): haversine is good to ~0.2 m there, not 1e-12.
    np.testing.assert_allclose(geo.haversine_km(lat, lng, -lat, anti_lng), math.pi * R, rtol=3e-8)
    assert geo.haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(math.pi * R, rel=1e-15)
    assert geo.haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * R, rel=1e-15)


def test_haversine_is_symmetric_broadcasts_and_wraps_the_antimeridian():
    pairs = random_pairs(1000, 3)
    np.testing.assert_array_equal(geo.haversine_km(*pairs), geo.haversine_km(pairs[2], pairs[3], pairs[0], pairs[1]))
    many = geo.haversine_km(pairs[0], pairs[1], 0.0, 0.0)
    assert many.shape == (1000,)
    # 179.5 E and 179.5 W on the equator are 1 degree apart, not 359.
    assert geo.haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(2 * math.pi * R / 360, rel=1e-9)
    assert geo.haversine_km(10.0, 180.0, 10.0, -180.0) == pytest.approx(0.0, abs=1e-9)


def test_xyz_of_known_points():
    np.testing.assert_allclose(geo.latlng_to_xyz(0.0, 0.0), [1, 0, 0], atol=1e-16)
    np.testing.assert_allclose(geo.latlng_to_xyz(0.0, 90.0), [0, 1, 0], atol=1e-16)
    np.testing.assert_allclose(geo.latlng_to_xyz(90.0, 37.0), [0, 0, 1], atol=1e-16)
    np.testing.assert_allclose(geo.latlng_to_xyz(-90.0, 0.0), [0, 0, -1], atol=1e-16)
    np.testing.assert_allclose(geo.latlng_to_xyz(0.0, 180.0), [-1, 0, 0], atol=1e-15)


def test_xyz_round_trips_and_unit_length():
    pairs = random_pairs(10_000, 4)
    xyz = geo.latlng_to_xyz(pairs[0], pairs[1])
    assert xyz.shape == (10_000, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=-1), 1.0, rtol=1e-15)
    lat, lng = geo.xyz_to_latlng(xyz)
    np.testing.assert_allclose(lat, pairs[0], atol=1e-11)
    np.testing.assert_allclose(lng, pairs[1], atol=1e-11)
    # Scale does not matter: sums of unit vectors come back to the same direction.
    lat2, lng2 = geo.xyz_to_latlng(xyz * 123.4)
    np.testing.assert_allclose(lat2, pairs[0], atol=1e-11)
    np.testing.assert_allclose(lng2, pairs[1], atol=1e-11)
    lat3, lng3 = geo.xyz_sum_to_latlng(7 * xyz[:, 0], 7 * xyz[:, 1], 7 * xyz[:, 2])
    np.testing.assert_allclose(lat3, pairs[0], atol=1e-11)
    np.testing.assert_allclose(lng3, pairs[1], atol=1e-11)


def slow_mean_location(points: list[tuple[float, float]], weights: list[float]) -> tuple[float, float]:
    """The obvious reference: sum weighted unit vectors with math, one point at a time."""
    sx = sy = sz = 0.0
    for (lat, lng), w in zip(points, weights):
        phi, theta = math.radians(lat), math.radians(lng)
        sx += w * math.cos(phi) * math.cos(theta)
        sy += w * math.cos(phi) * math.sin(theta)
        sz += w * math.sin(phi)
    return math.degrees(math.atan2(sz, math.hypot(sx, sy))), math.degrees(math.atan2(sy, sx))


def test_mean_across_the_antimeridian_is_on_the_antimeridian():
    lat, lng = geo.mean_location([10.0, 10.0], [179.0, -179.0])
    assert abs(lng) == pytest.approx(180.0, abs=1e-9)  # a mean of raw longitudes would say 0
    assert 10.0 < lat < 10.01  # the chord midpoint lies slightly poleward of the parallel
    lat, lng = geo.mean_location([-20.0, -20.0, -25.0], [170.0, -170.0, 180.0])
    assert abs(lng) == pytest.approx(180.0, abs=1e-9)


def test_mean_of_points_around_a_pole_is_the_pole():
    lat, _ = geo.mean_location(np.full(4, 80.0), [0.0, 90.0, 180.0, -90.0])
    assert lat == pytest.approx(90.0, abs=1e-9)


def test_weighted_mean_equals_repeating_points_and_the_slow_reference():
    rng = np.random.default_rng(5)
    lat, lng = rng.uniform(30, 60, 50), rng.uniform(-20, 40, 50)
    counts = rng.integers(1, 5, 50)
    weighted = geo.mean_location(lat, lng, weights=counts)
    repeated = geo.mean_location(np.repeat(lat, counts), np.repeat(lng, counts))
    assert weighted == pytest.approx(repeated, abs=1e-10)
    assert weighted == pytest.approx(slow_mean_location(list(zip(lat, lng)), counts.tolist()), abs=1e-10)
    assert geo.mean_location(lat, lng) == pytest.approx(slow_mean_location(list(zip(lat, lng)), [1.0] * 50), abs=1e-10)


def test_mean_of_one_point_is_the_point():
    assert geo.mean_location([48.8566], [2.3522]) == pytest.approx((48.8566, 2.3522), abs=1e-12)
