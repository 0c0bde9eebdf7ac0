"""Per-cell sums of photos: the one NumPy aggregation behind the CELLS table (no Beam here).

``reduce_by_cell`` sums rows that share an S2 cell id; ``merge_partials`` combines partial sums;
``cells_table`` turns them into a ``schemas.CELLS`` table. ``pipelines.bucket_cells`` wraps these in a
Beam ``CombineFn`` (the tensorflow/transform pattern: NumPy analyzers here, the Beam wrapper there), and
``cells_table_from_points`` runs the same code in memory for tests, benchmarks and small local runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from partition_gen import s2cells
from partition_gen.geo import latlng_to_xyz
from schemas import columns as c
from schemas.tables import CELLS


class CellPartial:
    """Per-cell sums of some photos: ids ascending and unique, counts, xyz sums (k, 3), feature sums (k, D)."""

    __slots__ = ("cell_ids", "counts", "xyz", "features")

    def __init__(self, cell_ids: np.ndarray, counts: np.ndarray, xyz: np.ndarray, features: np.ndarray):
        self.cell_ids, self.counts, self.xyz, self.features = cell_ids, counts, xyz, features

    def __reduce__(self):
        return CellPartial, (self.cell_ids, self.counts, self.xyz, self.features)

    def __len__(self) -> int:
        return len(self.cell_ids)


def reduce_by_cell(cell_ids: np.ndarray, counts: np.ndarray, xyz: np.ndarray, features: np.ndarray) -> CellPartial:
    """Sum rows that share a cell id (sort once, ``np.add.reduceat`` per quantity, float64 sums)."""
    if len(cell_ids) == 0:
        return CellPartial(cell_ids, counts[:0], xyz[:0].astype(np.float64), features[:0].astype(np.float64))
    order = np.argsort(cell_ids, kind="stable")
    ids = cell_ids[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    return CellPartial(
        ids[starts],
        np.add.reduceat(counts[order], starts),
        np.add.reduceat(xyz[order], starts, axis=0, dtype=np.float64),
        np.add.reduceat(features[order], starts, axis=0, dtype=np.float64),
    )


def merge_partials(partials: Sequence[CellPartial]) -> CellPartial:
    """One partial from many (cells present in several are summed)."""
    partials = [p for p in partials if p is not None and len(p)]
    if not partials:
        return empty_partial(0)
    if len(partials) == 1:
        return partials[0]
    return reduce_by_cell(
        np.concatenate([p.cell_ids for p in partials]),
        np.concatenate([p.counts for p in partials]),
        np.concatenate([p.xyz for p in partials]),
        np.concatenate([p.features for p in partials]),
    )


def empty_partial(dim: int) -> CellPartial:
    return CellPartial(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, dim)))


def cells_table(partial: CellPartial, level: int) -> pa.Table:
    """A ``schemas.CELLS`` table from merged sums."""
    n, dim = partial.features.shape if partial.features.ndim == 2 else (0, 0)
    features = pa.FixedSizeListArray.from_arrays(pa.array(partial.features.reshape(-1), pa.float64()), dim)
    return pa.Table.from_arrays(
        [
            pa.array(partial.cell_ids, pa.uint64()),
            pa.array(np.full(n, level, np.int8)),
            pa.array(partial.counts, pa.int64()),
            pa.array(partial.xyz[:, 0]),
            pa.array(partial.xyz[:, 1]),
            pa.array(partial.xyz[:, 2]),
            features.cast(CELLS.field(c.FEATURE_SUM).type),
        ],
        schema=CELLS,
    )


def cells_table_from_points(lat, lng, features=None, *, level: int = 14) -> pa.Table:
    """A ``schemas.CELLS`` table from photo locations (and optional per-photo features), in memory.

    The same sums as the bucketing job (``pipelines.bucket_cells``), for tests, benchmarks and small runs.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    ids = s2cells.latlng_to_cell_ids(lat, lng, level)
    features = np.zeros((ids.size, 0)) if features is None else np.asarray(features, dtype=np.float64)
    partial = reduce_by_cell(ids, np.ones(ids.size, np.int64), latlng_to_xyz(lat, lng), features)
    return cells_table(partial, level)
