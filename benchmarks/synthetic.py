"""Synthetic partitions for the benchmarks that need a model's geoclass sets but not real ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def voronoi_partitions(set_classes: Sequence[int], seed: int, sets_checksum: str, n_nodes: int = 5000):
    """Partitions of sets whose classes are spherical Voronoi cells of random seed nodes over random nodes."""
    from partition_gen.geo import latlng_to_xyz
    from partition_gen.partitions import build_partitions

    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n_nodes)))
    lng = rng.uniform(-180, 180, n_nodes)
    xyz = latlng_to_xyz(lat, lng)
    assignments = {}
    for i, k in enumerate(set_classes):
        seeds = xyz[rng.choice(n_nodes, k, replace=False)]
        assignments[f"set{i + 1}"] = np.argmax(xyz @ seeds.T, axis=1).astype(np.int32)
    n_images = rng.integers(1, 20, n_nodes)
    return build_partitions(assignments, n_images, xyz * n_images[:, None], sets_checksum=sets_checksum)
