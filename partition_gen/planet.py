"""PlaNet's adaptive S2 partitioning as a geoclass-set generator (DESIGN.md, "PlaNet baseline set").

Starting from the S2 cells at ``min_level`` (default 0: the six cube faces), a cell is split into its
children while it holds more than ``t_max`` images; cells that end with fewer than ``t_min`` images are
dropped. The input is a list of leaf cells with image counts (level-14 graph nodes, or coarser cells such as
the rows of a published partition); a leaf's images cannot be split below the leaf's own level, so a leaf
that is still above ``t_max`` at its own level becomes a class as it is.

A geoclass set must be a partition of *all* nodes, so the nodes of dropped cells are not discarded: each
joins the kept class whose image-weighted centre is nearest to the node's own centre (great-circle, via
nearest unit vectors). Those classes are therefore not always contiguous, unlike merged sets; the image
counts of classes include the adopted nodes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from partition_gen import s2cells


@dataclass(frozen=True)
class AdaptivePartition:
    """Per leaf, the final S2 cell containing it (``kept`` says whether that cell survived ``t_min``)."""

    leaf_cell: np.ndarray  # uint64 (n_leaves,)
    kept: np.ndarray  # bool (n_leaves,)
    cell_ids: np.ndarray  # uint64 (n_kept,) ascending: the kept cells
    cell_counts: np.ndarray  # int64 (n_kept,)

    @property
    def n_cells(self) -> int:
        return int(self.cell_ids.size)


def adaptive_s2_partition(
    cell_ids, counts, t_min: int, t_max: int, *, min_level: int = 0, max_level: int = 30
) -> AdaptivePartition:
    """Split cells holding more than ``t_max`` images, then drop cells with fewer than ``t_min``."""
    ids = np.asarray(cell_ids, dtype=np.uint64).ravel()
    counts = np.asarray(counts, dtype=np.int64).ravel()
    if ids.size != counts.size:
        raise ValueError(f"{ids.size} cell ids but {counts.size} counts")
    if ids.size == 0:
        raise ValueError("no cells to partition")
    if (counts < 0).any():
        raise ValueError("image counts must be non-negative")
    if not 0 <= t_min <= t_max or t_max < 1:
        raise ValueError(f"need 0 <= t_min <= t_max and t_max >= 1, got t_min={t_min} t_max={t_max}")
    levels = s2cells.cell_levels(ids).astype(np.int64)
    if (levels < min_level).any():
        raise ValueError(f"a leaf cell is coarser (level {int(levels.min())}) than min_level={min_level}")

    leaf_cell = np.zeros(ids.size, dtype=np.uint64)
    pending = np.arange(ids.size)
    level = min_level
    while pending.size:
        lv = levels[pending]
        here = ids[pending].copy()
        finer = lv > level
        here[finer] = s2cells.parent_cell_ids(here[finer], level)
        uniq, inverse = np.unique(here, return_inverse=True)
        total = np.bincount(inverse, weights=counts[pending], minlength=uniq.size)
        splittable = np.bincount(inverse, weights=finer, minlength=uniq.size) > 0
        split = (total > t_max) & splittable & (level < max_level)
        settle = ~split[inverse]
        leaf_cell[pending[settle]] = here[settle]
        pending = pending[~settle]
        level += 1

    cells, inverse = np.unique(leaf_cell, return_inverse=True)
    totals = np.bincount(inverse, weights=counts, minlength=cells.size).astype(np.int64)
    keep_cell = totals >= t_min
    return AdaptivePartition(
        leaf_cell=leaf_cell, kept=keep_cell[inverse], cell_ids=cells[keep_cell], cell_counts=totals[keep_cell]
    )


def planet_labels(
    cell_ids, n_images, xyz_sum, t_min: int, t_max: int, *, min_level: int = 0
) -> tuple[np.ndarray, AdaptivePartition]:
    """Dense class ids per node (classes ordered by S2 cell id) with dropped nodes adopted by the nearest
    kept class; also returns the partition itself."""
    partition = adaptive_s2_partition(cell_ids, n_images, t_min, t_max, min_level=min_level)
    if partition.n_cells == 0:
        raise ValueError(
            f"PlaNet partition with t_min={t_min}, t_max={t_max} keeps no cell: every cell has < t_min images"
        )
    labels = np.full(partition.leaf_cell.size, -1, dtype=np.int64)
    labels[partition.kept] = np.searchsorted(partition.cell_ids, partition.leaf_cell[partition.kept])
    xyz = np.asarray(xyz_sum, dtype=np.float64).reshape(-1, 3)
    if (~partition.kept).any():
        class_xyz = np.zeros((partition.n_cells, 3))
        np.add.at(class_xyz, labels[partition.kept], xyz[partition.kept])
        centres = _unit(class_xyz)
        _, nearest = cKDTree(centres).query(_unit(xyz[~partition.kept]))
        labels[~partition.kept] = nearest
    return labels.astype(np.int32), partition


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def read_partition_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Cell ids and image counts of a published PlaNet partition CSV (GeoEstimation's ``cells_*.csv``:
    two metadata lines, then class_label, hex_id, imgs_per_cell, latitude_mean, longitude_mean)."""
    with open(path, newline="") as handle:
        lines = handle.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("class_label")), None)
    if start is None:
        raise ValueError(f"{path}: no 'class_label,hex_id,imgs_per_cell,...' header line")
    rows = list(csv.DictReader(lines[start:]))
    tokens = [r["hex_id"] for r in rows]
    counts = np.array([int(r["imgs_per_cell"]) for r in rows], dtype=np.int64)
    return s2cells.tokens_to_cell_ids(tokens), counts
