"""What the feature model looks like: similarity of photo pairs by distance, and feature_model.png."""

from __future__ import annotations

import logging

import numpy as np

from partition_gen.geo import EARTH_RADIUS_KM, latlng_to_xyz
from sampledata.field import LocationField
from sampledata.photos import simulate_photos

log = logging.getLogger(__name__)

PROBE_DISTANCES_KM = (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000)


def destination(lat, lng, bearing_deg, distance_km) -> tuple[np.ndarray, np.ndarray]:
    """The point at distance_km along a great circle from (lat, lng) with the given initial bearing."""
    phi1, lam1 = np.radians(lat), np.radians(lng)
    theta, delta = np.radians(bearing_deg), np.asarray(distance_km) / EARTH_RADIUS_KM
    phi2 = np.arcsin(np.sin(phi1) * np.cos(delta) + np.cos(phi1) * np.sin(delta) * np.cos(theta))
    lam2 = lam1 + np.arctan2(
        np.sin(theta) * np.sin(delta) * np.cos(phi1), np.cos(delta) - np.sin(phi1) * np.sin(phi2)
    )
    return np.degrees(phi2), (np.degrees(lam2) + 540.0) % 360.0 - 180.0


def similarity_by_distance(
    field: LocationField, base_lat, base_lng, seed: int, distances_km=PROBE_DISTANCES_KM
) -> dict[str, list[float]]:
    """Mean cosine similarity of photo pairs at given distances: per scale field, signal, outdoor photos."""
    rng = np.random.default_rng([int(seed), 7])
    n = len(base_lat)
    result: dict[str, list[float]] = {s.name: [] for s in field.scales}
    result.update({"signal": [], "outdoor photos": [], "indoor photos": []})
    xyz_a = latlng_to_xyz(base_lat, base_lng) * EARTH_RADIUS_KM
    for d in distances_km:
        lat_b, lng_b = destination(base_lat, base_lng, rng.uniform(0, 360, n), d)
        xyz_b = latlng_to_xyz(lat_b, lng_b) * EARTH_RADIUS_KM
        for k, scale in enumerate(field.scales):
            fa, fb = field.scale_field(k, xyz_a), field.scale_field(k, xyz_b)
            result[scale.name].append(float(np.mean(_cosine(fa, fb))))
        result["signal"].append(
            float(np.mean(_cosine(field.signal(base_lat, base_lng), field.signal(lat_b, lng_b))))
        )
        for label, flag in (("outdoor photos", False), ("indoor photos", True)):
            flags = np.full(n, flag)
            a = simulate_photos(base_lat, base_lng, seed, field=field, indoor=flags, photo_stream=1000)
            b = simulate_photos(lat_b, lng_b, seed, field=field, indoor=flags, photo_stream=1001)
            result[label].append(float(np.mean(_cosine(a, b))))
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def plot_feature_model(path, field: LocationField, train_lat, train_lng, test_sets: dict, seed: int):
    """PNG: where the photos are, and how feature similarity falls with distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng([int(seed), 8])
    show = rng.choice(len(train_lat), size=min(20000, len(train_lat)), replace=False)
    probes = rng.choice(len(train_lat), size=min(500, len(train_lat)), replace=False)
    curves = similarity_by_distance(field, train_lat[probes], train_lng[probes], seed)

    fig, (ax_map, ax_sim) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [1.5, 1]})
    ax_map.scatter(
        train_lng[show], train_lat[show], s=0.3, c="0.55", label=f"train (MP-16, {len(show):,} shown)"
    )
    colours = ("tab:red", "tab:blue", "tab:green")
    for colour, (name, test) in zip(colours, test_sets.items()):
        ax_map.scatter(
            test.lng, test.lat, s=1.0, c=colour, alpha=0.5, label=f"test {name} ({len(test.lat):,})"
        )
    ax_map.set(
        xlim=(-180, 180),
        ylim=(-90, 90),
        xlabel="longitude",
        ylabel="latitude",
        title="Photo locations (real)",
    )
    ax_map.legend(loc="lower left", markerscale=6, fontsize=8)
    for name, values in curves.items():
        style = "-o" if name in ("signal", "outdoor photos", "indoor photos") else "--"
        ax_sim.plot(PROBE_DISTANCES_KM, values, style, label=name, markersize=3)
    ax_sim.set(
        xscale="log",
        xlabel="distance between two photos (km)",
        ylabel="mean cosine similarity",
        title=f"Simulated features (seed {seed}, dim {field.dim})",
    )
    ax_sim.axhline(0, c="0.8", lw=0.8)
    ax_sim.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
