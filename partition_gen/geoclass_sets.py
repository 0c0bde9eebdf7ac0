"""The geoclass-sets artifact (docs/ARTIFACTS.md, "Geoclass sets") and its generator without Beam.

Layout of the artifact directory::

    sets.json            {"format": 1, "checksum", "level", "n_nodes", "sets": [{"name", "kind", "n_classes", "params"}]}
    assignments.parquet  one row per node (ascending cell_id): cell_id, n_images, x/y/z_sum, class_<name> int32
    classes.parquet      schemas.GEOCLASS_CLASSES: one row per (set, class): image count, node count, centre
    maps/<name>.png      one map per set (optional)
    _SUCCESS             written last: the directory is complete

The checksum is SHA-256 over the node ids (uint64 little-endian) and, per set in order, its name and its
assignment (int32 little-endian); a model or partitions file built from other sets carries another checksum
and is refused. ``load_geoclass_sets`` validates everything it reads: every node in exactly one class,
dense ids 0..K-1, counts and checksum consistent.

Python entry point: ``generate_geoclass_sets(cells, specs)`` builds the initial graph once and every set
from it; ``pipelines.generate_geoclass_sets`` runs the same ``generate_set`` per spec on Beam workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from partition_gen.geo import xyz_sum_to_latlng
from partition_gen.graph import InitialGraph, graph_from_cells_table
from partition_gen.merging import merge_nodes
from partition_gen.params import MERGE, PLANET, GeoclassSetSpec, check_unique_names
from partition_gen.planet import planet_labels
from schemas import columns as c
from schemas.artifacts import SETS_FORMAT as FORMAT
from schemas.artifacts import SETS_JSON, commit_staged, local_staging, read_sets_json
from schemas.io import join_path, open_for_read, write_table_atomic
from schemas.tables import GEOCLASS_CLASSES, SchemaError

log = logging.getLogger(__name__)

ASSIGNMENTS = "assignments.parquet"
CLASSES = "classes.parquet"
MAPS_DIR = "maps"


@dataclass
class GeoclassSets:
    """Several geoclass sets over the same nodes (non-empty cells in ascending ``cell_id`` order)."""

    level: int
    cell_ids: np.ndarray  # uint64 (N,)
    node_n_images: np.ndarray  # int64 (N,)
    node_xyz_sum: np.ndarray  # float64 (N, 3)
    set_names: list[str] = field(default_factory=list)
    assignments: dict[str, np.ndarray] = field(default_factory=dict)  # int32 (N,) per set
    n_classes: dict[str, int] = field(default_factory=dict)
    params: dict[str, dict] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return int(self.cell_ids.size)

    @property
    def checksum(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.cell_ids, dtype="<u8").tobytes())
        for name in self.set_names:
            h.update(name.encode("utf-8") + b"\0")
            h.update(np.ascontiguousarray(self.assignments[name], dtype="<i4").tobytes())
        return h.hexdigest()

    def add(self, spec: GeoclassSetSpec, labels: np.ndarray) -> None:
        if spec.name in self.assignments:
            raise ValueError(f"geoclass set '{spec.name}' is already present")
        labels = np.asarray(labels, dtype=np.int32)
        self.set_names.append(spec.name)
        self.assignments[spec.name] = labels
        self.n_classes[spec.name] = int(labels.max()) + 1 if labels.size else 0
        self.params[spec.name] = spec.params()
        self.kinds[spec.name] = spec.kind
        self.validate_set(spec.name)

    def spec(self, name: str) -> GeoclassSetSpec:
        return GeoclassSetSpec.from_json(
            {
                "name": name,
                "kind": self.kinds[name],
                "n_classes": self.n_classes[name],
                "params": self.params[name],
            }
        )

    def validate_set(self, name: str) -> None:
        labels = self.assignments[name]
        k = self.n_classes[name]
        if labels.shape != (self.n_nodes,):
            raise SchemaError(f"geoclass set '{name}': {labels.size} assignments for {self.n_nodes} nodes")
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise SchemaError(f"geoclass set '{name}': class ids outside 0..{k - 1}")
        used = np.bincount(labels, minlength=k)
        if (used == 0).any():
            raise SchemaError(
                f"geoclass set '{name}': class ids are not dense (class {int(np.argmin(used))} is empty)"
            )

    def validate(self) -> None:
        if self.cell_ids.size > 1 and (np.diff(self.cell_ids) <= 0).any():
            raise SchemaError("geoclass sets: node cell_ids are not strictly ascending")
        if len(set(self.set_names)) != len(self.set_names):
            raise SchemaError(f"geoclass sets: repeated set names {self.set_names}")
        for name in self.set_names:
            self.validate_set(name)

    def classes_table(self) -> pa.Table:
        """One row per (set, class): image count, node count and image-weighted centre."""
        parts = {f.name: [] for f in GEOCLASS_CLASSES}
        for name in self.set_names:
            labels, k = self.assignments[name], self.n_classes[name]
            xyz = np.stack(
                [np.bincount(labels, weights=self.node_xyz_sum[:, i], minlength=k) for i in range(3)], axis=1
            )
            lat, lng = xyz_sum_to_latlng(xyz[:, 0], xyz[:, 1], xyz[:, 2])
            parts[c.SET_ID].append(np.full(k, name, dtype=object))
            parts[c.CLASS_ID].append(np.arange(k, dtype=np.int32))
            parts[c.N_IMAGES].append(
                np.bincount(labels, weights=self.node_n_images, minlength=k).astype(np.int64)
            )
            parts[c.N_NODES].append(np.bincount(labels, minlength=k).astype(np.int64))
            parts[c.LAT].append(lat)
            parts[c.LNG].append(lng)
        arrays = [
            pa.array(np.concatenate(parts[f.name]) if parts[f.name] else [], type=f.type)
            for f in GEOCLASS_CLASSES
        ]
        return pa.Table.from_arrays(arrays, schema=GEOCLASS_CLASSES)

    def assignments_table(self) -> pa.Table:
        cols = {
            c.CELL_ID: pa.array(self.cell_ids, type=pa.uint64()),
            c.N_IMAGES: pa.array(self.node_n_images, type=pa.int64()),
            c.X_SUM: pa.array(self.node_xyz_sum[:, 0], type=pa.float64()),
            c.Y_SUM: pa.array(self.node_xyz_sum[:, 1], type=pa.float64()),
            c.Z_SUM: pa.array(self.node_xyz_sum[:, 2], type=pa.float64()),
        }
        for name in self.set_names:
            cols[c.class_column(name)] = pa.array(self.assignments[name], type=pa.int32())
        return pa.table(cols)

    def manifest(self) -> dict:
        return {
            "format": FORMAT,
            "checksum": self.checksum,
            "level": int(self.level),
            "n_nodes": self.n_nodes,
            "sets": [
                {"name": n, "kind": self.kinds[n], "n_classes": self.n_classes[n], "params": self.params[n]}
                for n in self.set_names
            ],
        }


def empty_sets_from_cells(table: pa.Table) -> GeoclassSets:
    """Node data of a cells table (sorted by cell_id) without building the graph: for writers that
    receive the assignments from elsewhere."""
    from schemas.tables import CELLS, check_columns

    check_columns(
        "cells", table.schema, CELLS, required=[c.CELL_ID, c.LEVEL, c.N_IMAGES, c.X_SUM, c.Y_SUM, c.Z_SUM]
    )
    table = table.sort_by(c.CELL_ID)
    ids = table.column(c.CELL_ID).to_numpy(zero_copy_only=False)
    if ids.size > 1 and (ids[1:] == ids[:-1]).any():
        raise SchemaError("cells: column 'cell_id' has duplicate ids")
    levels = np.unique(table.column(c.LEVEL).to_numpy(zero_copy_only=False))
    if levels.size != 1:
        raise SchemaError(f"cells: column '{c.LEVEL}' mixes levels {levels.tolist()}; one level per graph")
    return GeoclassSets(
        level=int(levels[0]),
        cell_ids=ids.astype(np.uint64),
        node_n_images=table.column(c.N_IMAGES).to_numpy(zero_copy_only=False).astype(np.int64),
        node_xyz_sum=np.stack(
            [table.column(k).to_numpy(zero_copy_only=False) for k in (c.X_SUM, c.Y_SUM, c.Z_SUM)], axis=1
        ).astype(np.float64),
    )


def empty_sets_for(graph: InitialGraph) -> GeoclassSets:
    return GeoclassSets(
        level=graph.level,
        cell_ids=graph.cell_ids,
        node_n_images=graph.n_images,
        node_xyz_sum=graph.xyz_sum,
    )


def generate_set(
    graph: InitialGraph, spec: GeoclassSetSpec, *, progress: bool = False, in_place: bool = False
) -> np.ndarray:
    """Class ids (int32, dense) per graph node for one spec.

    ``in_place``: a merge works on the graph's own features (no N x D copy) and leaves them unusable; the
    caller restores them (``graph.with_streamed_feature_means(..., out=graph.features)``) or drops the graph.
    """
    spec.check_against(graph.n_nodes, graph.embedding_dim)
    started = time.perf_counter()
    if spec.kind == PLANET:
        labels, partition = planet_labels(
            graph.cell_ids, graph.n_images, graph.xyz_sum, spec.t_min, spec.t_max
        )
        log.info("%s: %d PlaNet cells kept", spec.name, partition.n_cells)
    elif spec.kind == MERGE:
        labels = merge_nodes(
            graph, spec.n_classes, spec.alpha, spec.beta, spec.feature_dims, progress=progress, name=spec.name,
            in_place=in_place,
        ).labels
    else:  # GeoclassSetSpec refuses other kinds; kept for a clear message if that ever changes
        raise ValueError(f"unknown geoclass set kind {spec.kind!r}")
    log.info(
        "%s: %d classes in %.1f s", spec.describe(), int(labels.max()) + 1, time.perf_counter() - started
    )
    return labels


def generate_geoclass_sets(
    cells: pa.Table | InitialGraph, specs: Sequence[GeoclassSetSpec], *, progress: bool = False
) -> GeoclassSets:
    """Every set of ``specs`` from one cells table (or an already built graph), without Beam."""
    check_unique_names(specs)
    graph = (
        cells
        if isinstance(cells, InitialGraph)
        else graph_from_cells_table(cells, with_features=_needs_features(specs))
    )
    for spec in specs:
        spec.check_against(graph.n_nodes, graph.embedding_dim)
    sets = empty_sets_for(graph)
    for spec in specs:
        sets.add(spec, generate_set(graph, spec, progress=progress))
    return sets


def _needs_features(specs: Sequence[GeoclassSetSpec]) -> bool:
    return any(s.kind == MERGE and s.beta[0] > 0 for s in specs)


# --------------------------------------------------------------------------------------------------
# Save / load


def save_geoclass_sets(sets: GeoclassSets, path: str, *, maps: bool = True) -> None:
    """Write the artifact: files into a local staging directory, then published with the checksummed marker
    last (``schemas.artifacts.commit_staged``: renamed into place locally, copied on ``gs://``)."""
    sets.validate()
    staging = local_staging(path)
    write_artifact_files(sets, staging, maps=maps)
    commit_staged(staging, path, {"checksum": sets.checksum})


def write_artifact_files(sets: GeoclassSets, directory: str, *, maps: bool) -> None:
    write_table_atomic(sets.assignments_table(), os.path.join(directory, ASSIGNMENTS))
    write_table_atomic(sets.classes_table(), os.path.join(directory, CLASSES))
    with open(os.path.join(directory, SETS_JSON), "w") as handle:
        json.dump(sets.manifest(), handle, indent=2)
    if maps:
        from partition_gen.maps import write_set_maps

        write_set_maps(sets, os.path.join(directory, MAPS_DIR))


def load_geoclass_sets(path: str) -> GeoclassSets:
    """Read and validate a geoclass-sets artifact; a missing marker or any inconsistency is an error."""
    import pyarrow.parquet as pq

    def join(name: str) -> str:
        return join_path(path, name)

    # The marker must be there, every file as it was written, sets.json of this format (schemas.artifacts).
    manifest = read_sets_json(path)
    with open_for_read(join(ASSIGNMENTS)) as handle:
        table = pq.read_table(handle)
    names = [s["name"] for s in manifest["sets"]]
    for col in [c.CELL_ID, c.N_IMAGES, c.X_SUM, c.Y_SUM, c.Z_SUM] + [c.class_column(n) for n in names]:
        if col not in table.column_names:
            raise SchemaError(f"{path}/{ASSIGNMENTS}: missing column '{col}'")
        if table.column(col).null_count:
            raise SchemaError(f"{path}/{ASSIGNMENTS}: column '{col}' has nulls (a node without a class)")
    if table.num_rows != manifest["n_nodes"]:
        raise SchemaError(
            f"{path}: {SETS_JSON} says {manifest['n_nodes']} nodes, {ASSIGNMENTS} has {table.num_rows}"
        )

    def col(name):
        return table.column(name).to_numpy(zero_copy_only=False)

    sets = GeoclassSets(
        level=int(manifest["level"]),
        cell_ids=col(c.CELL_ID).astype(np.uint64),
        node_n_images=col(c.N_IMAGES).astype(np.int64),
        node_xyz_sum=np.stack([col(c.X_SUM), col(c.Y_SUM), col(c.Z_SUM)], axis=1).astype(np.float64),
    )
    for record in manifest["sets"]:
        name = record["name"]
        sets.set_names.append(name)
        sets.assignments[name] = col(c.class_column(name)).astype(np.int32)
        sets.n_classes[name] = int(record["n_classes"])
        sets.params[name] = record["params"]
        sets.kinds[name] = record["kind"]
    sets.validate()
    if sets.checksum != manifest["checksum"]:
        raise SchemaError(
            f"{path}: checksum mismatch ({SETS_JSON} says {manifest['checksum'][:12]}…, data gives {sets.checksum[:12]}…)"
        )
    _check_classes_file(sets, join(CLASSES), path)
    return sets


def _check_classes_file(sets: GeoclassSets, classes_path: str, path: str) -> None:
    import pyarrow.parquet as pq

    with open_for_read(classes_path) as handle:
        got = pq.read_table(handle)
    want = sets.classes_table()
    for column in (c.SET_ID, c.CLASS_ID, c.N_IMAGES, c.N_NODES):
        if got.column(column).to_pylist() != want.column(column).to_pylist():
            raise SchemaError(f"{path}/{CLASSES}: column '{column}' disagrees with {ASSIGNMENTS}")


def class_sizes(sets: GeoclassSets, name: str) -> Mapping[str, np.ndarray]:
    """Image and node counts per class of one set (handy for balance checks and reports)."""
    labels, k = sets.assignments[name], sets.n_classes[name]
    return {
        "n_images": np.bincount(labels, weights=sets.node_n_images, minlength=k).astype(np.int64),
        "n_nodes": np.bincount(labels, minlength=k),
    }
