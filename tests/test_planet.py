"""PlaNet adaptive S2 partitioning: against the published MP-16 reference partitions, against a slow
recursive reference, and as a geoclass set that covers every node."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import s2sphere

from partition_gen import s2cells
from partition_gen.planet import adaptive_s2_partition, planet_labels, read_partition_csv

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SHARED_DATA = Path("/work/shared/data")


def data_file(name: str) -> Path:
    """The bundled copy in the repo's data/ when present, else the shared read-only copy."""
    return REPO_DATA / name if (REPO_DATA / name).exists() else SHARED_DATA / name


@pytest.fixture(scope="module")
def mp16_counts():
    return read_partition_csv(data_file("mp16_s2cells_50_1000.csv"))


# Measured with this code (commit of issue 15): shared cells / reference cells and shared / ours are
# 0.984 / 0.992 (t_max 1000), 0.982 / 0.993 (2000), 0.970 / 0.991 (5000). The published partitions were
# built from the full photo set, the bundled counts are their leaves, hence not 100 %. A t_max off by 5 %
# (1900 or 2100 for 2000) already drops one of the two below its bound.
@pytest.mark.parametrize(
    "t_max,min_of_reference,min_of_ours",
    [(1000, 0.98, 0.99), (2000, 0.978, 0.99), (5000, 0.965, 0.988)],
)
def test_mp16_partition_shares_its_cells_with_the_published_planet_partition(
    mp16_counts, t_max, min_of_reference, min_of_ours
):
    ids, counts = mp16_counts
    part = adaptive_s2_partition(ids, counts, t_min=50, t_max=t_max)
    # The published file read with the csv module (not the code's reader): its hex_id column holds S2 tokens.
    with open(data_file(f"mp16_s2cells_50_{t_max}.csv"), newline="") as f:
        reference = {row["hex_id"] for row in csv.DictReader(f.readlines()[2:])}
    ours = {s2sphere.CellId(int(i)).to_token() for i in part.cell_ids}
    shared = len(ours & reference)
    assert shared / len(reference) >= min_of_reference, (shared, len(reference))
    assert shared / len(ours) >= min_of_ours, (shared, len(ours))


def _slow_partition(leaves: dict[int, int], t_min: int, t_max: int) -> set[int]:
    """Recursive reference with s2sphere: split a cell while it holds > t_max images and can be split."""
    kept = set()

    def visit(cell: s2sphere.CellId):
        inside = {leaf: n for leaf, n in leaves.items() if cell.contains(s2sphere.CellId(leaf))}
        total = sum(inside.values())
        finer = any(s2sphere.CellId(leaf).level() > cell.level() for leaf in inside)
        if total > t_max and finer:
            for child in cell.children():
                visit(child)
        elif inside and total >= t_min:
            kept.add(cell.id())

    for face in range(6):
        visit(s2sphere.CellId.from_face_pos_level(face, 0, 0))
    return kept


def test_matches_slow_recursive_reference():
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(48.8, 0.5, 300), rng.normal(40.7, 2, 200), rng.uniform(-60, 60, 100)]
    lng = np.r_[rng.normal(2.3, 0.5, 300), rng.normal(-74, 2, 200), rng.uniform(-180, 180, 100)]
    ids, counts = np.unique(s2cells.latlng_to_cell_ids(lat, lng, 10), return_counts=True)
    part = adaptive_s2_partition(ids, counts, t_min=5, t_max=40)
    expected = _slow_partition(dict(zip(ids.tolist(), counts.tolist())), 5, 40)
    assert set(part.cell_ids.tolist()) == expected
    levels = s2cells.cell_levels(part.cell_ids)
    assert np.all((part.cell_counts <= 40) | (levels == 10)) and np.all(part.cell_counts >= 5)
    assert part.cell_counts.sum() == counts[part.kept].sum()


def test_dropped_nodes_join_the_nearest_kept_class():
    rng = np.random.default_rng(1)
    lat = np.r_[rng.normal(48.8, 0.3, 500), [-40.0, 10.0]]
    lng = np.r_[rng.normal(2.3, 0.3, 500), [170.0, 60.0]]
    ids, inverse, counts = np.unique(
        s2cells.latlng_to_cell_ids(lat, lng, 14), return_inverse=True, return_counts=True
    )
    xyz = np.zeros((ids.size, 3))
    np.add.at(xyz, inverse, s2cells.cell_center_xyz(ids)[inverse])
    labels, part = planet_labels(ids, counts, xyz, t_min=20, t_max=100)
    assert labels.shape == (ids.size,) and labels.min() == 0
    assert set(np.unique(labels).tolist()) == set(range(part.n_cells))  # dense, every node has a class
    assert (~part.kept).any()
    centres = np.zeros((part.n_cells, 3))
    np.add.at(centres, labels[part.kept], xyz[part.kept])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for i in np.flatnonzero(~part.kept):
        u = xyz[i] / np.linalg.norm(xyz[i])
        assert labels[i] == int(np.argmax(centres @ u))


def test_bad_thresholds_and_empty_results_fail_clearly():
    ids = s2cells.latlng_to_cell_ids(np.array([1.0]), np.array([2.0]), 14)
    with pytest.raises(ValueError, match="t_min"):
        adaptive_s2_partition(ids, [5], t_min=10, t_max=5)
    with pytest.raises(ValueError, match="keeps no cell"):
        planet_labels(ids, [5], s2cells.cell_center_xyz(ids), t_min=10, t_max=100)
