"""Benchmark ``combination``: the partition combiner against dense per-node Eq. 3, and against the backbone.

Setup (seeded): 1,000,000 nodes placed like real photos (the MP-16 coordinate sample, jittered by ~1 km);
5 geoclass sets of 10,000 classes each, built like the paper's sets from shared boundaries (each class is the
Voronoi region of ~52 of 520,000 "micro-regions" of nodes, so the 5 sets share boundaries and intersect in
~93,000 partitions, near the paper's 107,593); node image counts 1..40.

Probabilities: a trained classifier's softmax is peaked around the photo's true place, so each image gets
logits = N(0, 1.5) noise + 7 on the true class + 4 on the 5 classes nearest to it, per set. A "flat" run
(Dirichlet(1) probabilities, no peak: the threshold bound cannot prune) reports the worst case separately.

Measures (images/s and CPU seconds per image on this CPU, one process, with the load average): the combiner
(NormalizedSum, top-5, batch 256) and the dense per-node evaluation (Eq. 3 over every node, arg-max with
ties, Eq. 4 location) on the same images, checking they give the same locations (peaked and flat rows); the
speed-ups are ratios of CPU seconds per image (robust when the machine is shared), wall-clock ones beside; and the share of the backbone's time per image, timing an Inception v3
(weights=None, include_top=False, pooling='avg') forward pass on batches of 8 299x299 images.

Run: ``python -m benchmarks.bench_combination`` (records key ``combination`` in bench/results.json).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from scipy.spatial import cKDTree

from benchmarks.results import record
from partition_gen.combine import NORMALIZED_SUM, Combiner, node_scores_reference
from partition_gen.geo import haversine_km, latlng_to_xyz, xyz_to_latlng
from partition_gen.partitions import build_partitions

LOG = logging.getLogger("bench_combination")

N_NODES = 1_000_000
N_SETS = 5
N_CLASSES = 10_000
N_MICRO = 520_000
N_IMAGES_COMBINER = 2048
N_IMAGES_DENSE = 48
N_IMAGES_FLAT = 512
N_IMAGES_DENSE_FLAT = 16
BATCH = 256
TOP_K = 5


def node_positions(rng: np.random.Generator, n: int) -> np.ndarray:
    try:
        import pandas as pd

        from sampledata.paths import mp16_coordinates

        coords = pd.read_csv(mp16_coordinates())
        lat, lng = coords["LAT"].to_numpy(), coords["LON"].to_numpy()
        pick = rng.integers(0, lat.size, n)
        lat = np.clip(lat[pick] + rng.normal(0, 0.01, n), -89.9, 89.9)
        lng = (lng[pick] + rng.normal(0, 0.01, n) + 180) % 360 - 180
    except FileNotFoundError:
        lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
        lng = rng.uniform(-180, 180, n)
    return latlng_to_xyz(lat, lng)


def synthetic_sets(rng: np.random.Generator):
    xyz = node_positions(rng, N_NODES)
    micro_seeds = xyz[rng.choice(N_NODES, N_MICRO, replace=False)]
    _, node_micro = cKDTree(micro_seeds).query(xyz)
    assignments, class_seeds = {}, {}
    for s in range(N_SETS):
        seeds = micro_seeds[rng.choice(N_MICRO, N_CLASSES, replace=False)]
        _, micro_class = cKDTree(seeds).query(micro_seeds)
        # Dense ids: a seed may win no micro-region; renumber the classes that exist.
        _, dense = np.unique(micro_class, return_inverse=True)
        assignments[f"set{s + 1}"] = dense[node_micro].astype(np.int32)
        class_seeds[f"set{s + 1}"] = (seeds, np.unique(micro_class))
    n_images = rng.integers(1, 41, N_NODES)
    return xyz, assignments, n_images, xyz * n_images[:, None], class_seeds


def peaked_probabilities(rng, xyz, assignments, class_seeds, n_images: int) -> tuple[dict, np.ndarray]:
    true_nodes = rng.integers(0, xyz.shape[0], n_images)
    probs = {}
    for name, classes in assignments.items():
        k = int(classes.max()) + 1
        seeds, existing = class_seeds[name]
        logits = rng.normal(0, 1.5, (n_images, k))
        logits[np.arange(n_images), classes[true_nodes]] += 7.0
        # The 5 classes nearest the true place (by seed) get a smaller boost: the classifier's confusions.
        _, near = cKDTree(seeds[existing]).query(xyz[true_nodes], k=5)
        logits[np.arange(n_images)[:, None], near] += 4.0
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        probs[name] = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs, true_nodes


def dense_per_node(assignments, node_xyz_sum, probs, chunk: int = 8, rtol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 3 over every node, then Eq. 4 over the arg-max nodes: the baseline without partitions."""
    n = next(iter(probs.values())).shape[0]
    lat, lng = np.empty(n), np.empty(n)
    for lo in range(0, n, chunk):
        sub = {k: v[lo : lo + chunk] for k, v in probs.items()}
        scores = node_scores_reference(assignments, sub, NORMALIZED_SUM)
        best = scores.max(axis=1)
        ties = scores >= (best - rtol * np.abs(best))[:, None]
        la, ln = xyz_to_latlng(ties.astype(np.float64) @ node_xyz_sum)
        lat[lo : lo + chunk], lng[lo : lo + chunk] = la, ln
    return lat, lng


def time_combiner(combiner: Combiner, probs: dict) -> tuple[float, float, object]:
    """Wall and CPU seconds of predicting every image in batches of BATCH."""
    n = next(iter(probs.values())).shape[0]
    start, cpu = time.perf_counter(), time.process_time()
    preds = [combiner.predict({k: v[lo : lo + BATCH] for k, v in probs.items()}) for lo in range(0, n, BATCH)]
    return time.perf_counter() - start, time.process_time() - cpu, preds


def backbone_seconds_per_image(batch: int = 8, repeats: int = 2) -> float:
    import keras

    model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg", input_shape=(299, 299, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    model.predict_on_batch(x)  # warm-up: graph tracing and memory allocation
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(x)
    return (time.perf_counter() - start) / (batch * repeats)


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rng = np.random.default_rng(2018)
    t0 = time.perf_counter()
    LOG.info("building %d nodes and %d sets of %d classes", N_NODES, N_SETS, N_CLASSES)
    xyz, assignments, n_images, xyz_sum, class_seeds = synthetic_sets(rng)
    t1 = time.perf_counter()
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="bench")
    build_s = time.perf_counter() - t1
    LOG.info("%d partitions built in %.1f s (sets in %.1f s)", parts.n_partitions, build_s, t1 - t0)

    probs, true_nodes = peaked_probabilities(rng, xyz, assignments, class_seeds, N_IMAGES_COMBINER)
    combiner = Combiner(parts, NORMALIZED_SUM, top_k=TOP_K)
    combiner.predict({k: v[:8] for k, v in probs.items()})  # warm-up
    load = [os.getloadavg()[0]]
    comb_s, comb_cpu, preds = time_combiner(combiner, probs)
    comb_ips = N_IMAGES_COMBINER / comb_s
    LOG.info("combiner: %.0f images/s (peaked probabilities)", comb_ips)

    sub = {k: v[:N_IMAGES_DENSE] for k, v in probs.items()}
    load.append(os.getloadavg()[0])
    start, cpu = time.perf_counter(), time.process_time()
    dense_lat, dense_lng = dense_per_node(assignments, xyz_sum, sub)
    dense_s, dense_cpu = time.perf_counter() - start, time.process_time() - cpu
    dense_ips = N_IMAGES_DENSE / dense_s
    LOG.info("dense per-node: %.1f images/s", dense_ips)
    comb_lat = np.concatenate([p.lat for p in preds])[:N_IMAGES_DENSE]
    comb_lng = np.concatenate([p.lng for p in preds])[:N_IMAGES_DENSE]
    disagreement_km = float(haversine_km(comb_lat, comb_lng, dense_lat, dense_lng).max())
    if disagreement_km > 1e-3:
        raise AssertionError(f"combiner and dense per-node locations differ by up to {disagreement_km} km")

    flat = {k: rng.dirichlet(np.ones(v.shape[1]), size=N_IMAGES_FLAT).astype(np.float32) for k, v in probs.items()}
    # Warm-up, as for the peaked rows: flat rows take the compiled search, whose first call loads it.
    combiner.predict({k: v[:8] for k, v in flat.items()})
    load.append(os.getloadavg()[0])
    flat_s, flat_cpu, flat_preds = time_combiner(combiner, flat)
    flat_ips = N_IMAGES_FLAT / flat_s
    LOG.info("combiner: %.0f images/s (flat probabilities)", flat_ips)
    # Exactness on flat rows: the first images against the dense per-node path as well.
    sub = {k: v[:N_IMAGES_DENSE_FLAT] for k, v in flat.items()}
    flat_dense_lat, flat_dense_lng = dense_per_node(assignments, xyz_sum, sub)
    flat_lat = np.concatenate([p.lat for p in flat_preds])[:N_IMAGES_DENSE_FLAT]
    flat_lng = np.concatenate([p.lng for p in flat_preds])[:N_IMAGES_DENSE_FLAT]
    flat_disagreement_km = float(haversine_km(flat_lat, flat_lng, flat_dense_lat, flat_dense_lng).max())
    if flat_disagreement_km > 1e-3:
        raise AssertionError(f"flat rows: combiner and dense per-node differ by up to {flat_disagreement_km} km")
    load.append(os.getloadavg()[0])

    backbone_s = backbone_seconds_per_image()
    LOG.info("Inception v3 backbone: %.3f s/image", backbone_s)
    top1 = np.median(np.concatenate([v.max(axis=1) for v in probs.values()]))
    all_lat = np.concatenate([p.lat for p in preds])
    all_lng = np.concatenate([p.lng for p in preds])
    true_lat, true_lng = xyz_to_latlng(xyz[true_nodes])
    figures = {
        "n_nodes": N_NODES,
        "n_sets": N_SETS,
        "n_classes_per_set": [int(k) for k in parts.n_classes],
        "n_partitions": parts.n_partitions,
        "partitions_build_s": round(build_s, 2),
        "images_combiner": N_IMAGES_COMBINER,
        "images_dense": N_IMAGES_DENSE,
        "batch": BATCH,
        "top_k": TOP_K,
        "median_top1_probability": round(float(top1), 3),
        "combiner_images_per_s": round(comb_ips, 1),
        "dense_per_node_images_per_s": round(dense_ips, 2),
        "combiner_cpu_s_per_image": round(comb_cpu / N_IMAGES_COMBINER, 6),
        "dense_per_node_cpu_s_per_image": round(dense_cpu / N_IMAGES_DENSE, 5),
        "combiner_flat_cpu_s_per_image": round(flat_cpu / N_IMAGES_FLAT, 6),
        "load_average_peaked_dense_flat_after": [round(x, 2) for x in load],
        # Speed-ups in CPU seconds per image (robust on a shared machine); the wall-clock ones beside them.
        "speedup_vs_dense": round((dense_cpu / N_IMAGES_DENSE) / (comb_cpu / N_IMAGES_COMBINER), 1),
        "speedup_vs_dense_wall": round(comb_ips / dense_ips, 1),
        "speedup_goal": 50,
        "images_flat": N_IMAGES_FLAT,
        "combiner_flat_probabilities_images_per_s": round(flat_ips, 1),
        "flat_speedup_vs_dense": round((dense_cpu / N_IMAGES_DENSE) / (flat_cpu / N_IMAGES_FLAT), 1),
        "flat_speedup_vs_dense_wall": round(flat_ips / dense_ips, 1),
        "max_location_disagreement_km": disagreement_km,
        "flat_max_location_disagreement_km": flat_disagreement_km,
        "backbone_s_per_image": round(backbone_s, 4),
        "combiner_share_of_backbone_time": round((1 / comb_ips) / backbone_s, 6),
        "median_error_km_synthetic": round(float(np.median(haversine_km(all_lat, all_lng, true_lat, true_lng))), 2),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    record("combination", figures)
    LOG.info("combination: %s", figures)
    return figures


if __name__ == "__main__":
    main()
