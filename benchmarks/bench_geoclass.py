"""Geoclass-set generation at the paper's scale: 2.8M level-14 nodes, 128-d features, 10,000 classes.

    python -m benchmarks.bench_geoclass            # full scale (about 3 minutes, ~3.5 GB)
    python -m benchmarks.bench_geoclass --nodes 300000 --classes 1000   # quick look

Nodes are drawn from the real MP-16 photo density: photos are drawn in proportion to ``imgs_per_cell`` of
the PlaNet partition ``mp16_s2cells_50_1000.csv``, each at a uniformly random level-14 cell inside its
partition cell, until 2.8M distinct level-14 cells are hit; ``n_images`` of a node is its number of draws.
Features are 128-d float32 means: a smooth function of location plus noise (no pixels are available here).

Measured: seconds (wall and CPU, with the load average) to build the initial graph (convex hull, Voronoi
territories, adjacency) and to merge (α = (1, 0, 0), β = (0.5, 0.5), so both distance terms are computed),
against Qhull alone on the same points in the same run (the hull call the graph makes, same options):
``total_over_qhull`` = (graph + merge) / Qhull, goal <= 1.5; peak RSS goal <= 3.5 GB. The machine may be
shared, so the CPU-seconds ratio is recorded beside the wall-clock one. In the same run, a 50,000-node
sample (same density) is merged both by ``merge_nodes`` and by the networkx contraction
``merge_reference_networkx``, and with ``--python_check`` the full-scale set is merged again by the
pure-Python loop (``engine="python"``, the implementation the compiled loop replaced); the record says whether the classes
are identical and for what share of nodes (float32 BLAS dot products there, float64-accumulated ones in the
compiled loop: a near-tie in edge weight can go the other way).
Records key ``geoclass_sets`` in bench/results.json and draws the 10,000-class set to
bench/geoclass_sets_map.png.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np

from benchmarks.results import RESULTS_PATH, record
from partition_gen import s2cells
from partition_gen.graph import _hull_facets, _normalise_rows, build_initial_graph, with_feature_means
from partition_gen.merging import merge_nodes, merge_reference_networkx
from partition_gen.planet import read_partition_csv
from schemas.cli import Parser

LOG = logging.getLogger("bench_geoclass")
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SHARED_DATA = Path("/work/shared/data")
DENSITY_FILE = "mp16_s2cells_50_1000.csv"
LEVEL = 14
ALPHA = (1.0, 0.0, 0.0)
BETA = (0.5, 0.5)


def density_file() -> Path:
    return REPO_DATA / DENSITY_FILE if (REPO_DATA / DENSITY_FILE).exists() else SHARED_DATA / DENSITY_FILE


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def draw_nodes(n_nodes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_nodes`` distinct level-14 cells (ascending) and their photo counts, drawn from MP-16 density."""
    rng = np.random.default_rng(seed)
    parents, counts = read_partition_csv(density_file())
    levels = s2cells.cell_levels(parents).astype(np.int64)
    # Partition cells finer than level 14 stand for their level-14 parent.
    fine = levels > LEVEL
    parents[fine] = s2cells.parent_cell_ids(parents[fine], LEVEL)
    levels[fine] = LEVEL
    lsb = np.uint64(1) << (np.uint64(2) * (np.uint64(30) - levels.astype(np.uint64)))
    lsb14 = np.uint64(1) << np.uint64(2 * (30 - LEVEL))
    n_children = (lsb // lsb14).astype(np.float64)
    first_child = parents - lsb + lsb14
    prob = counts / counts.sum()
    drawn = np.zeros(0, dtype=np.uint64)
    while True:
        cell = rng.choice(parents.size, size=2_000_000, p=prob)
        k = np.floor(rng.random(cell.size) * n_children[cell]).astype(np.uint64)
        drawn = np.concatenate([drawn, first_child[cell] + k * (np.uint64(2) * lsb14)])
        ids, n = np.unique(drawn, return_counts=True)
        LOG.info("drawn %d photos, %d distinct level-14 cells", drawn.size, ids.size)
        if ids.size >= n_nodes:
            keep = np.sort(rng.choice(ids.size, n_nodes, replace=False))
            return ids[keep], n[keep]


def smooth_features(xyz: np.ndarray, dim: int, seed: int = 1, chunk: int = 500_000) -> np.ndarray:
    """float32 (N, dim): random Fourier features of the location plus noise, built in chunks."""
    rng = np.random.default_rng(seed)
    freq = rng.normal(scale=6.0, size=(3, dim))
    phase = rng.uniform(0, 2 * np.pi, dim)
    out = np.empty((len(xyz), dim), dtype=np.float32)
    for start in range(0, len(xyz), chunk):
        block = xyz[start : start + chunk]
        out[start : start + chunk] = np.cos(block @ freq + phase) + rng.normal(
            scale=0.5, size=(len(block), dim)
        )
    return out


def sample_graph(cell_ids, counts, dim, feature_dtype):
    xyz = s2cells.cell_center_xyz(cell_ids)
    return build_initial_graph(
        cell_ids,
        counts,
        xyz * counts[:, None],
        level=LEVEL,
        feature_mean=smooth_features(xyz, dim),
        feature_dtype=feature_dtype,
    )


def networkx_comparison(cell_ids, counts, n_sample: int, n_classes: int, dim: int) -> dict:
    rng = np.random.default_rng(2)
    pick = np.sort(rng.choice(cell_ids.size, n_sample, replace=False))
    graph = sample_graph(cell_ids[pick], counts[pick], dim, np.float64)
    started = time.perf_counter()
    fast = merge_nodes(graph, n_classes, ALPHA, BETA)
    fast_s = time.perf_counter() - started
    LOG.info("sample: merge_nodes %.2f s; networkx reference running…", fast_s)
    started = time.perf_counter()
    slow = merge_reference_networkx(graph, n_classes, ALPHA, BETA, scan=False)
    slow_s = time.perf_counter() - started
    same = float(np.mean(fast.labels == slow.labels))
    LOG.info(
        "sample: networkx %.1f s, ratio %.1fx, same class for %.4f of nodes", slow_s, slow_s / fast_s, same
    )
    return {
        "sample_nodes": n_sample,
        "sample_classes": n_classes,
        "merge_nodes_s": round(fast_s, 3),
        "networkx_s": round(slow_s, 2),
        "speedup_vs_networkx": round(slow_s / fast_s, 1),
        "same_classes": bool(np.array_equal(fast.labels, slow.labels)),
        "fraction_nodes_same_class": same,
    }


def draw_map(graph, labels, path: Path, n_classes: int) -> None:
    from partition_gen.geo import xyz_to_latlng
    from partition_gen.maps import nearest_node_raster, render_set_map

    rng = np.random.default_rng(0)
    show = rng.choice(graph.n_nodes, min(graph.n_nodes, 300_000), replace=False)
    lat, lng = xyz_to_latlng(graph.sites[show])
    nearest = nearest_node_raster(graph.sites[show])
    title = f"{graph.n_nodes:,} MP-16-density nodes merged to {n_classes:,} classes, α={ALPHA}, β={BETA}"
    render_set_map(lat, lng, labels[show], title, str(path), nearest=nearest)


def main(argv: list[str] | None = None) -> dict:
    parser = Parser(description="geoclass-set generation benchmark")
    parser.add_argument("--nodes", type=int, default=2_800_000)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sample", type=int, default=50_000)
    parser.add_argument("--no_record", action="store_true")
    parser.add_argument(
        "--python_check", action="store_true",
        help="also re-merge the full set with the pure-Python loop (~75 s more; off by default to fit make "
             "bench's 3.5 minutes: the networkx comparison on 50k nodes is the identity check)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    started = time.perf_counter()
    cell_ids, counts = draw_nodes(args.nodes)
    draw_s = time.perf_counter() - started
    sample_classes = max(2, round(args.classes * args.sample / args.nodes))
    comparison = networkx_comparison(cell_ids, counts, args.sample, sample_classes, args.dim)
    gc.collect()

    # Qhull alone on the very points the graph triangulates (its cell centres), with the same options.
    sites = _normalise_rows(s2cells.cell_center_xyz(cell_ids))
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    simplices, _ = _hull_facets(sites, "Q5")
    qhull_s, qhull_cpu = time.perf_counter() - started, time.process_time() - cpu
    LOG.info("Qhull alone: %d facets in %.1f s (cpu %.1f s)", len(simplices), qhull_s, qhull_cpu)
    del simplices, sites
    gc.collect()

    xyz_sum = s2cells.cell_center_xyz(cell_ids) * counts[:, None]  # photos at their cell centre
    load_graph = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    graph = build_initial_graph(cell_ids, counts, xyz_sum, level=LEVEL)
    graph_s, graph_cpu = time.perf_counter() - started, time.process_time() - cpu
    graph_peak = peak_rss_gb()
    LOG.info(
        "graph: %d nodes, %d edges in %.1f s (cpu %.1f s, peak %.2f GB)",
        graph.n_nodes,
        graph.n_edges,
        graph_s,
        graph_cpu,
        graph_peak,
    )

    # Features join after the hull, as graph_from_cells_table does, so Qhull's memory is gone by then.
    started = time.perf_counter()
    graph = with_feature_means(graph, smooth_features(graph.sites, args.dim))
    gc.collect()
    LOG.info("features %s in %.1f s", graph.features.shape, time.perf_counter() - started)

    load_merge = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    result = merge_nodes(graph, args.classes, ALPHA, BETA, progress=True, name="benchmark set", in_place=True)
    merge_s, merge_cpu = time.perf_counter() - started, time.process_time() - cpu
    load_after = os.getloadavg()[0]
    peak = peak_rss_gb()
    LOG.info(
        "merged to %d classes in %.1f s (cpu %.1f s, peak %.2f GB)", result.n_classes, merge_s, merge_cpu, peak
    )
    python_check = None
    if args.python_check:
        # The in-place merge consumed the features: rebuild them (same seed) for the reference loop.
        graph = with_feature_means(graph, smooth_features(graph.sites, args.dim))
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        reference = merge_nodes(graph, args.classes, ALPHA, BETA, in_place=True, engine="python")
        python_check = {
            "merge_s": round(time.perf_counter() - started, 2),
            "merge_cpu_s": round(time.process_time() - cpu, 2),
            "same_classes": bool(np.array_equal(reference.labels, result.labels)),
            "fraction_nodes_same_class": float(np.mean(reference.labels == result.labels)),
        }
        LOG.info("Python merge loop on the same set: %s", python_check)

    images = np.bincount(result.labels, weights=graph.n_images)
    figures = {
        "nodes": graph.n_nodes,
        "edges": graph.n_edges,
        "images": int(graph.n_images.sum()),
        "feature_dim": args.dim,
        "classes": result.n_classes,
        "alpha": list(ALPHA),
        "beta": list(BETA),
        "qhull_alone_s": round(qhull_s, 2),
        "qhull_alone_cpu_s": round(qhull_cpu, 2),
        "graph_build_s": round(graph_s, 2),
        "merge_s": round(merge_s, 2),
        "total_s": round(graph_s + merge_s, 2),
        "graph_build_cpu_s": round(graph_cpu, 2),
        "merge_cpu_s": round(merge_cpu, 2),
        "total_cpu_s": round(graph_cpu + merge_cpu, 2),
        "total_over_qhull": round((graph_s + merge_s) / qhull_s, 2),
        "total_cpu_over_qhull_cpu": round((graph_cpu + merge_cpu) / qhull_cpu, 2),
        "goal_total_over_qhull": 1.5,
        "load_average_qhull_graph_merge_after": [
            round(x, 2) for x in (load_before, load_graph, load_merge, load_after)
        ],
        "peak_rss_after_graph_gb": round(graph_peak, 2),
        "peak_rss_gb": round(peak, 2),
        "goal_peak_gb": 3.5,
        "merge_in_place": True,
        "merge_engine": "numba",
        "python_loop_check": python_check,
        "class_images_max_over_mean": round(float(images.max() / images.mean()), 2),
        "class_images_min_over_mean": round(float(images.min() / images.mean()), 3),
        "draw_nodes_s": round(draw_s, 1),
        "networkx_comparison": comparison,
    }
    map_path = RESULTS_PATH.parent / "geoclass_sets_map.png"
    try:
        draw_map(graph, result.labels, map_path, result.n_classes)
        figures["map"] = map_path.name
    except Exception as err:  # a failed picture must not lose the measured figures
        LOG.warning("map not drawn: %s", err)
    if not args.no_record:
        record("geoclass_sets", figures)
    print(figures, flush=True)
    return figures


if __name__ == "__main__":
    main()
