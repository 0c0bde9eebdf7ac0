"""S2 cell ids per second: the vectorized NumPy path next to s2sphere's (and s2geometry's) per-point loop.

All paths run in one process on the same points (1,000,000 uniform on the sphere, level 14). The
per-point libraries run on the first 100,000 of them (their rate does not depend on the count), and their
ids are checked against the vectorized ones before any figure is recorded.

    python -m benchmarks.bench_s2          # prints a table, records "s2_cell_ids" in bench/results.json
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import s2sphere

from benchmarks.results import RESULTS_PATH, record
from partition_gen import s2cells

N_POINTS = 1_000_000
N_LOOP_POINTS = 100_000
LEVEL = 14
REPEATS = 3
GOAL_RATIO = 20.0

log = logging.getLogger(__name__)


def uniform_sphere_points(n: int, seed: int = 2024) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    return lat, rng.uniform(-180.0, 180.0, n)


def s2sphere_loop(lat: np.ndarray, lng: np.ndarray, level: int) -> np.ndarray:
    from_lat_lng, from_degrees = s2sphere.CellId.from_lat_lng, s2sphere.LatLng.from_degrees
    ids = [from_lat_lng(from_degrees(a, b)).parent(level).id() for a, b in zip(lat.tolist(), lng.tolist())]
    return np.array(ids, dtype=np.uint64)


def s2geometry_loop_or_none() -> tuple[Callable[[np.ndarray, np.ndarray, int], np.ndarray], str] | None:
    """The C++ S2 library's per-point loop through its Python bindings, when they are installed."""
    try:
        import s2geometry as s2

        version = getattr(s2, "__version__", None)
        if version is None:
            from importlib.metadata import version as dist_version

            version = dist_version("s2geometry")
    except ImportError:
        try:
            import pywraps2 as s2

            version = "pywraps2"
        except ImportError:
            return None

    def loop(lat: np.ndarray, lng: np.ndarray, level: int) -> np.ndarray:
        cell_id, from_degrees = s2.S2CellId, s2.S2LatLng.FromDegrees
        ids = [cell_id(from_degrees(a, b)).parent(level).id() for a, b in zip(lat.tolist(), lng.tolist())]
        return np.array(ids, dtype=np.uint64)

    return loop, version


def best_seconds(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def extra_memory_mb(run: Callable[[], np.ndarray]) -> float:
    """Peak memory a call allocates beyond its own result (NumPy reports to tracemalloc)."""
    tracemalloc.start()
    result = run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - result.nbytes) / 2**20


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lat, lng = uniform_sphere_points(N_POINTS)
    log.info("vectorized: %d points at level %d, best of %d", N_POINTS, LEVEL, REPEATS)
    s2cells.latlng_to_cell_ids(lat[:1000], lng[:1000], LEVEL)  # warm the lookup tables and ufunc caches
    vec_s, vec_ids = best_seconds(lambda: s2cells.latlng_to_cell_ids(lat, lng, LEVEL), REPEATS)
    memory_mb = extra_memory_mb(lambda: s2cells.latlng_to_cell_ids(lat, lng, LEVEL))

    sub_lat, sub_lng = lat[:N_LOOP_POINTS], lng[:N_LOOP_POINTS]
    log.info("s2sphere per-point loop: first %d of the same points", N_LOOP_POINTS)
    loop_s, loop_ids = best_seconds(lambda: s2sphere_loop(sub_lat, sub_lng, LEVEL), 1)
    if not np.array_equal(loop_ids, vec_ids[:N_LOOP_POINTS]):
        raise AssertionError("vectorized ids differ from s2sphere's: figures not recorded")

    rows = [("vectorized NumPy (partition_gen.s2cells)", N_POINTS, N_POINTS / vec_s)]
    rows.append(("s2sphere per-point loop", N_LOOP_POINTS, N_LOOP_POINTS / loop_s))
    figures = {
        "level": LEVEL,
        "points": "uniform on the sphere, seed 2024",
        "vectorized_points": N_POINTS,
        "vectorized_seconds": round(vec_s, 4),
        "vectorized_points_per_s": round(N_POINTS / vec_s),
        "vectorized_extra_memory_mb": round(memory_mb, 1),
        "chunk_points": s2cells.CHUNK_POINTS,
        "s2sphere_version": s2sphere_version(),
        "s2sphere_points": N_LOOP_POINTS,
        "s2sphere_seconds": round(loop_s, 4),
        "s2sphere_points_per_s": round(N_LOOP_POINTS / loop_s),
        "ratio_vs_s2sphere": round(loop_s / N_LOOP_POINTS * N_POINTS / vec_s, 1),
        "goal_ratio_vs_s2sphere": GOAL_RATIO,
        "ids_identical_to_s2sphere": True,
    }
    s2geometry = s2geometry_loop_or_none()
    if s2geometry is None:
        figures["s2geometry"] = "not installed"
    else:
        loop, version = s2geometry
        log.info("s2geometry per-point loop (%s): first %d of the same points", version, N_LOOP_POINTS)
        geo_s, geo_ids = best_seconds(lambda: loop(sub_lat, sub_lng, LEVEL), 1)
        if not np.array_equal(geo_ids, vec_ids[:N_LOOP_POINTS]):
            raise AssertionError("vectorized ids differ from s2geometry's: figures not recorded")
        rows.append((f"s2geometry {version} per-point loop", N_LOOP_POINTS, N_LOOP_POINTS / geo_s))
        figures.update(
            s2geometry_version=version,
            s2geometry_points=N_LOOP_POINTS,
            s2geometry_seconds=round(geo_s, 4),
            s2geometry_points_per_s=round(N_LOOP_POINTS / geo_s),
            ratio_vs_s2geometry=round(geo_s / N_LOOP_POINTS * N_POINTS / vec_s, 1),
            ids_identical_to_s2geometry=True,
        )

    vec_rate = N_POINTS / vec_s
    print(f"\nS2 cell ids at level {LEVEL} (same points; per-point loops on the first {N_LOOP_POINTS:,})")
    print(f"{'path':<44} {'points':>10} {'points/s':>12} {'vectorized is':>14}")
    for name, n, rate in rows:
        print(f"{name:<44} {n:>10,} {rate:>12,.0f} {vec_rate / rate:>13.1f}x")
    print(f"extra memory of one 1M-point call: {memory_mb:.0f} MB (chunks of {s2cells.CHUNK_POINTS:,} points)")
    verdict = "met" if figures["ratio_vs_s2sphere"] >= GOAL_RATIO else "NOT met"
    print(f"goal >= {GOAL_RATIO:.0f}x s2sphere: {verdict}")
    record("s2_cell_ids", figures)
    print(f"recorded under 's2_cell_ids' in {RESULTS_PATH}")
    return figures


def s2sphere_version() -> str:
    from importlib.metadata import version

    return version("s2sphere")


if __name__ == "__main__":
    main()
