"""A small completed cells artifact (clustered + uniform points) for the geoclass-sets job tests."""

from __future__ import annotations

import numpy as np

from partition_gen.graph import cells_table_from_points
from schemas.io import SUCCESS_MARKER, write_table_atomic


def write_cells_artifact(directory, seed: int, centre: tuple[float, float], spread: tuple[float, float],
                         n_clustered: int, dim: int):  # fmt: skip
    """``n_clustered`` points around ``centre`` plus 300 uniform on the sphere, as ``directory/cells``."""
    rng = np.random.default_rng(seed)
    lat = np.r_[rng.normal(centre[0], spread[0], n_clustered), np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))]
    lng = np.r_[rng.normal(centre[1], spread[1], n_clustered), rng.uniform(-180, 180, 300)]
    table = cells_table_from_points(lat, lng, rng.normal(size=(lat.size, dim)))
    path = directory / "cells"
    write_table_atomic(table, str(path / "part-00000.parquet"))
    open(path / SUCCESS_MARKER, "w").close()
    return str(path), table
