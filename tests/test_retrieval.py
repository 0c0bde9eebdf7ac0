"""kNN retrieval and the prior-only baseline against slow, obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partition_gen import retrieval
from partition_gen.geo import haversine_km


def brute_force_neighbours(train: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    train = train.astype(np.float64)
    test = test.astype(np.float64)
    sims = np.empty((len(test), len(train)))
    for i, q in enumerate(test):
        for j, t in enumerate(train):
            sims[i, j] = q @ t / (np.linalg.norm(q) * np.linalg.norm(t))
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.mark.parametrize("k", [1, 7])
def test_nearest_neighbours_match_brute_force_across_blocks(k):
    rng = np.random.default_rng(3)
    train = rng.standard_normal((300, 16)).astype(np.float32) * rng.uniform(0.1, 5, (300, 1)).astype(
        np.float32
    )
    test = rng.standard_normal((41, 16)).astype(np.float32)
    want_idx, want_sim = brute_force_neighbours(train, test, k)
    # A tiny block size forces many blocks (one test row each), a huge one a single block.
    for block in (1, 1000, 1 << 24):
        idx, sim = retrieval.nearest_neighbours(train, test, k=k, max_block_elements=block)
        assert idx.shape == (41, k) and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(sim, want_sim, atol=1e-5)


def test_zero_vectors_get_similarity_zero_not_nan():
    train = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    test = np.array([[0.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    idx, sim = retrieval.nearest_neighbours(train, test, k=2)
    assert np.isfinite(sim).all()
    np.testing.assert_allclose(sim[0], [0.0, 0.0])
    assert idx[1, 0] == 1 and sim[1, 0] == pytest.approx(1.0)


def test_knn_predict_k1_returns_the_nearest_training_location():
    rng = np.random.default_rng(5)
    train = rng.standard_normal((200, 8)).astype(np.float32)
    train_lat = rng.uniform(-80, 80, 200)
    train_lng = rng.uniform(-180, 180, 200)
    test = train[[17, 3, 150]] + 0.01 * rng.standard_normal((3, 8)).astype(np.float32)
    lat, lng = retrieval.knn_predict(train, train_lat, train_lng, test, k=1)
    np.testing.assert_array_equal(lat, train_lat[[17, 3, 150]])
    np.testing.assert_array_equal(lng, train_lng[[17, 3, 150]])


def slow_location_mode(lat_row, lng_row, bandwidth_km):
    best, best_density = 0, -1.0
    for j in range(len(lat_row)):
        density = 0.0
        for i in range(len(lat_row)):
            d = float(haversine_km(lat_row[i], lng_row[i], lat_row[j], lng_row[j]))
            density += math.exp(-0.5 * (d / bandwidth_km) ** 2)
        if density > best_density + 1e-12:
            best, best_density = j, density
    return best


def test_location_mode_matches_a_slow_reference():
    rng = np.random.default_rng(11)
    lat = rng.uniform(40, 50, (25, 9))
    lng = rng.uniform(0, 10, (25, 9))
    got = retrieval.location_mode(lat, lng, bandwidth_km=150.0)
    want = [slow_location_mode(lat[r], lng[r], 150.0) for r in range(25)]
    np.testing.assert_array_equal(got, want)


def test_knn_mode_prefers_the_dense_cluster_over_the_single_best_match():
    # The two most similar neighbours are in Tokyo, the next three within a few km of each other in Paris.
    paris = [(48.8566, 2.3522), (48.86, 2.34), (48.85, 2.36)]
    tokyo = [(35.68, 139.69), (35.0, 135.0)]
    places = tokyo + paris
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    angles = np.radians([1, 2, 3, 4, 5])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    lat = np.array([p[0] for p in places])
    lng = np.array([p[1] for p in places])
    lat1, lng1 = retrieval.knn_predict(train, lat, lng, query, k=1)
    assert (lat1[0], lng1[0]) == tokyo[0]
    lat5, lng5 = retrieval.knn_predict(train, lat, lng, query, k=5, bandwidth_km=25.0)
    # The mode is whichever Paris photo the slow reference finds densest; Tokyo loses despite ranking first.
    idx, _ = retrieval.nearest_neighbours(train, query, k=5)
    want = slow_location_mode(lat[idx[0]], lng[idx[0]], 25.0)
    assert (lat5[0], lng5[0]) == (lat[idx[0][want]], lng[idx[0][want]])
    assert float(haversine_km(lat5[0], lng5[0], 48.8566, 2.3522)) < 5


def test_knn_rejects_mismatched_inputs():
    train = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        retrieval.nearest_neighbours(train, np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be"):
        retrieval.nearest_neighbours(train, np.ones((2, 3), dtype=np.float32), k=5)
    with pytest.raises(ValueError, match="NaN"):
        retrieval.nearest_neighbours(train, np.array([[1.0, np.nan, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="differ in length"):
        retrieval.knn_predict(train, np.zeros(3), np.zeros(4), np.ones((1, 3), dtype=np.float32))


def brute_force_densest(lat, lng, radius_km):
    counts = np.array([(haversine_km(lat[i], lng[i], lat, lng) <= radius_km).sum() for i in range(len(lat))])
    best = int(counts.max())
    return int(np.flatnonzero(counts == best)[0]), best


def clustered_points(rng, n_clusters, n, spread_deg):
    centres = np.stack([rng.uniform(-70, 70, n_clusters), rng.uniform(-180, 180, n_clusters)], axis=1)
    which = rng.integers(0, n_clusters, n)
    lat = np.clip(centres[which, 0] + rng.normal(0, spread_deg, n), -89.9, 89.9)
    lng = (centres[which, 1] + rng.normal(0, spread_deg, n) + 180) % 360 - 180
    return lat, lng


@pytest.mark.parametrize("radius_km", [0.05, 1.0, 25.0, 300.0, 3000.0])
def test_prior_baseline_matches_brute_force(radius_km):
    rng = np.random.default_rng(int(radius_km * 100) + 1)
    lat, lng = clustered_points(rng, 12, 1500, spread_deg=max(radius_km / 111.0, 0.0005))
    place = retrieval.prior_only_baseline(lat, lng, radius_km=radius_km)
    want_index, want_count = brute_force_densest(lat, lng, radius_km)
    assert (place.index, place.n_within) == (want_index, want_count)
    assert (place.lat, place.lng) == (lat[want_index], lng[want_index])


def test_prior_baseline_finds_the_constructed_densest_city_and_breaks_ties_by_index():
    rng = np.random.default_rng(2)
    scatter_lat, scatter_lng = rng.uniform(-60, 60, 300), rng.uniform(-180, 180, 300)
    # 40 photos within ~3 km of central Paris, 25 around New York: Paris is the densest place.
    paris_lat, paris_lng = 48.8566 + rng.normal(0, 0.01, 40), 2.3522 + rng.normal(0, 0.015, 40)
    ny_lat, ny_lng = 40.71 + rng.normal(0, 0.01, 25), -74.0 + rng.normal(0, 0.015, 25)
    lat = np.concatenate([scatter_lat, ny_lat, paris_lat])
    lng = np.concatenate([scatter_lng, ny_lng, paris_lng])
    place = retrieval.prior_only_baseline(lat, lng)
    assert place.index >= 325 and place.n_within >= 40
    assert float(haversine_km(place.lat, place.lng, 48.8566, 2.3522)) < 10
    pred_lat, pred_lng = place.predict(4)
    np.testing.assert_array_equal(pred_lat, [place.lat] * 4)
    np.testing.assert_array_equal(pred_lng, [place.lng] * 4)

    # Two identical far-apart clusters: every member counts the same, the lowest index wins.
    offsets = rng.normal(0, 0.01, (2, 10))
    lat2 = np.concatenate([10 + offsets[0], -30 + offsets[0]])
    lng2 = np.concatenate([20 + offsets[1], 100 + offsets[1]])
    assert retrieval.prior_only_baseline(lat2, lng2, radius_km=50).index == 0


def test_prior_baseline_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        retrieval.prior_only_baseline([], [])
    with pytest.raises(ValueError, match="NaN"):
        retrieval.prior_only_baseline([1.0, np.nan], [2.0, 3.0])
