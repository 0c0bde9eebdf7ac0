"""Combinatorial partitions: the non-empty intersections of N geoclass sets over the same nodes (Sec. 4.2).

Every node (a non-empty level-14 cell) has one class per set; nodes with the same tuple of classes form one
fine-grained partition and always share a score, so the combiner scores partitions, never nodes. This module
builds, restricts, saves and loads that precomputation:

- ``tuples``            (P, S) int32, the class of each partition in each set, rows sorted lexicographically
                        (the partition id is the row number, so the same sets always give the same ids);
- ``n_nodes``/``n_images``/``xyz_sum``  per partition: node count, training-image count, sum of the training
                        images' unit vectors (Eq. 4 needs sums, not means, to merge tied partitions exactly);
- ``node_center_sum``   per partition: sum of its nodes' unit centres, the fallback location of a partition
                        without training images (impossible when nodes are non-empty cells, but guarded);
- ``class_sizes``       |c| per (set, class): number of nodes (the NormalizedSum normaliser, DESIGN.md);
- ``class_indptr``/``class_members``  per set, a CSR index (set, class) -> partitions inside it;
- ``node_partition``    (N,) node -> partition, and node centres, for figures and per-node checks.

Artifact (docs/ARTIFACTS.md): ``partitions.parquet``, ``members.npz``, ``manifest.json``, ``_SUCCESS``.
The manifest ties it to the geoclass sets by their checksum; loading refuses a mismatch naming both sides.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from partition_gen.geo import latlng_to_xyz, xyz_to_latlng
from schemas import columns as c
from schemas.artifacts import commit_staged, local_staging, read_sets_json, verify
from schemas.io import (
    join_path,
    read_bytes,
    read_table,
    write_table_atomic,
)

log = logging.getLogger(__name__)

FORMAT = 1
PARTITIONS_FILE = "partitions.parquet"
MEMBERS_FILE = "members.npz"
MANIFEST_FILE = "manifest.json"
ASSIGNMENTS_FILE = "assignments.parquet"


class PartitionsMismatchError(ValueError):
    """A partitions artifact does not belong to the geoclass sets or the model it is used with."""


@dataclass(frozen=True, eq=False)
class Partitions:
    set_names: tuple[str, ...]
    n_classes: tuple[int, ...]
    tuples: np.ndarray
    n_nodes: np.ndarray
    n_images: np.ndarray
    xyz_sum: np.ndarray
    node_center_sum: np.ndarray
    class_sizes: tuple[np.ndarray, ...]
    class_indptr: tuple[np.ndarray, ...]
    class_members: tuple[np.ndarray, ...]
    node_partition: np.ndarray
    node_lat: np.ndarray
    node_lng: np.ndarray
    sets_checksum: str
    partitions_id: str
    _latlng: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_partitions(self) -> int:
        return int(self.tuples.shape[0])

    @property
    def n_sets(self) -> int:
        return len(self.set_names)

    @property
    def total_nodes(self) -> int:
        return int(self.node_partition.shape[0])

    def set_index(self, name: str) -> int:
        if name not in self.set_names:
            raise PartitionsMismatchError(
                f"partitions {self.partitions_id} have no geoclass set '{name}' (they have: {', '.join(self.set_names)})"
            )
        return self.set_names.index(name)

    def center_xyz(self) -> np.ndarray:
        """Unit centre per partition by Eq. 4: its training images' mean direction (node centres if none)."""
        return _centres(self.xyz_sum, self.node_center_sum)

    def centers_latlng(self) -> tuple[np.ndarray, np.ndarray]:
        if self._latlng is None:
            object.__setattr__(self, "_latlng", xyz_to_latlng(self.center_xyz()))
        return self._latlng

    def restrict(self, set_names: Sequence[str]) -> Partitions:
        """The partitions of a subset of the sets (a method such as CPlaNet[1-2] or a single ClassSet).

        Equal to building from scratch on those sets' assignments (a test checks it), but from the P
        partitions instead of the N nodes: partitions of a subset are unions of partitions of the whole.
        """
        names = tuple(set_names)
        if names == self.set_names:
            return self
        if not names or len(set(names)) != len(names):
            raise ValueError(f"restrict needs distinct set names, got {list(names)}")
        cols = [self.set_index(n) for n in names]
        sub, inverse = _unique_rows(self.tuples[:, cols])
        count = sub.shape[0]
        return _assemble(
            set_names=names,
            n_classes=tuple(self.n_classes[i] for i in cols),
            tuples=sub,
            n_nodes=np.bincount(inverse, weights=self.n_nodes, minlength=count).round().astype(np.int64),
            n_images=np.bincount(inverse, weights=self.n_images, minlength=count).round().astype(np.int64),
            xyz_sum=_sum_rows(inverse, self.xyz_sum, count),
            node_center_sum=_sum_rows(inverse, self.node_center_sum, count),
            class_sizes=tuple(self.class_sizes[i] for i in cols),
            node_partition=inverse[self.node_partition].astype(np.int32),
            node_lat=self.node_lat,
            node_lng=self.node_lng,
            sets_checksum=self.sets_checksum,
        )


def partitions_id_for(sets_checksum: str, set_names: Sequence[str]) -> str:
    """Stable id of the partitions of these sets: predictions carry it so results can be traced back."""
    digest = hashlib.sha256((sets_checksum + "|" + ",".join(set_names)).encode()).hexdigest()
    return f"partitions-{digest[:16]}"


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lexicographically sorted distinct rows and each input row's index among them."""
    rows = np.ascontiguousarray(rows, dtype=np.int32)
    if rows.shape[0] == 0:
        return rows.reshape(0, rows.shape[1]), np.zeros(0, dtype=np.int64)
    # lexsort + diff is several times faster than np.unique(axis=0) on millions of rows.
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    new = np.empty(rows.shape[0], dtype=bool)
    new[0] = True
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    ids_in_order = np.cumsum(new) - 1
    inverse = np.empty(rows.shape[0], dtype=np.int64)
    inverse[order] = ids_in_order
    return ordered[new], inverse


def _sum_rows(index: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    return np.stack([np.bincount(index, weights=values[:, k], minlength=count) for k in range(3)], axis=1)


def _centres(xyz_sum: np.ndarray, fallback_sum: np.ndarray) -> np.ndarray:
    xyz = np.array(xyz_sum, dtype=np.float64, copy=True)
    norm = np.linalg.norm(xyz, axis=-1)
    empty = norm <= 1e-12
    xyz[empty] = fallback_sum[empty]
    norm = np.linalg.norm(xyz, axis=-1)
    norm[norm == 0] = 1.0
    return xyz / norm[..., None]


def _assemble(*, set_names, n_classes, tuples, n_nodes, n_images, xyz_sum, node_center_sum, class_sizes,
              node_partition, node_lat, node_lng, sets_checksum) -> Partitions:
    indptr, members = [], []
    for i, k in enumerate(n_classes):
        column = tuples[:, i]
        # Stable sort keeps each class's partitions in ascending id order.
        members.append(np.argsort(column, kind="stable").astype(np.int32))
        indptr.append(np.concatenate([[0], np.cumsum(np.bincount(column, minlength=k))]).astype(np.int64))
    return Partitions(
        set_names=tuple(set_names),
        n_classes=tuple(int(k) for k in n_classes),
        tuples=tuples,
        n_nodes=n_nodes,
        n_images=n_images,
        xyz_sum=xyz_sum,
        node_center_sum=node_center_sum,
        class_sizes=tuple(np.asarray(s, dtype=np.int64) for s in class_sizes),
        class_indptr=tuple(indptr),
        class_members=tuple(members),
        node_partition=node_partition,
        node_lat=node_lat,
        node_lng=node_lng,
        sets_checksum=sets_checksum,
        partitions_id=partitions_id_for(sets_checksum, set_names),
    )


def build_partitions(
    assignments: Mapping[str, np.ndarray],
    node_n_images: np.ndarray,
    node_xyz_sum: np.ndarray,
    sets_checksum: str,
    set_names: Sequence[str] | None = None,
    n_classes: Mapping[str, int] | None = None,
    node_fallback_xyz: np.ndarray | None = None,
) -> Partitions:
    """Build the partitions of the sets ``set_names`` (default: all of ``assignments``, in order).

    ``assignments[name]`` is the node -> class id array of a set (dense ids 0..K-1); ``n_classes[name]``
    defaults to max id + 1. ``node_fallback_xyz`` (unit centres, e.g. of the S2 cells) is needed only for
    nodes without training images.
    """
    names = tuple(set_names) if set_names is not None else tuple(assignments)
    if not names:
        raise ValueError("build_partitions needs at least one geoclass set")
    missing = [n for n in names if n not in assignments]
    if missing:
        raise ValueError(f"no assignments for geoclass sets {missing} (have: {', '.join(assignments)})")
    node_n_images = np.asarray(node_n_images)
    node_xyz_sum = np.asarray(node_xyz_sum, dtype=np.float64)
    n = node_n_images.shape[0]
    if node_xyz_sum.shape != (n, 3):
        raise ValueError(f"node_xyz_sum has shape {node_xyz_sum.shape}, expected ({n}, 3) to match node_n_images")
    if (node_n_images < 0).any() or not np.isfinite(node_xyz_sum).all():
        raise ValueError("node image counts must be >= 0 and node xyz sums finite")
    columns, ks = [], []
    for name in names:
        a = np.asarray(assignments[name])
        if a.shape != (n,):
            raise ValueError(f"assignments of set '{name}' have shape {a.shape}, expected ({n},) (one class per node)")
        k = int(n_classes[name]) if n_classes is not None else (int(a.max()) + 1 if n else 0)
        if n and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"set '{name}': class ids must be in [0, {k}), found [{a.min()}, {a.max()}]")
        columns.append(a.astype(np.int32))
        ks.append(k)

    node_center = _node_centres(node_n_images, node_xyz_sum, node_fallback_xyz)
    tuples, inverse = _unique_rows(np.stack(columns, axis=1))
    count = tuples.shape[0]
    node_lat, node_lng = xyz_to_latlng(node_center)
    parts = _assemble(
        set_names=names,
        n_classes=tuple(ks),
        tuples=tuples,
        n_nodes=np.bincount(inverse, minlength=count).astype(np.int64),
        n_images=np.bincount(inverse, weights=node_n_images, minlength=count).round().astype(np.int64),
        xyz_sum=_sum_rows(inverse, node_xyz_sum, count),
        node_center_sum=_sum_rows(inverse, node_center, count),
        class_sizes=tuple(np.bincount(col, minlength=k) for col, k in zip(columns, ks)),
        node_partition=inverse.astype(np.int32),
        node_lat=node_lat.astype(np.float32),
        node_lng=node_lng.astype(np.float32),
        sets_checksum=sets_checksum,
    )
    log.info("built %d partitions from %d sets over %d nodes", count, len(names), n)
    return parts


def _node_centres(node_n_images, node_xyz_sum, node_fallback_xyz) -> np.ndarray:
    norm = np.linalg.norm(node_xyz_sum, axis=1)
    centre = node_xyz_sum / np.where(norm > 0, norm, 1.0)[:, None]
    empty = norm <= 1e-12
    if empty.any():
        if node_fallback_xyz is None:
            raise ValueError(
                f"{int(empty.sum())} nodes have no training images (first: node {int(np.argmax(empty))}); "
                "pass node_fallback_xyz (their cell centres) to place them"
            )
        fallback = np.asarray(node_fallback_xyz, dtype=np.float64)
        centre[empty] = fallback[empty] / np.linalg.norm(fallback[empty], axis=1)[:, None]
    return centre


# ---------------------------------------------------------------------------------------------- artifact I/O


def _table(parts: Partitions) -> pa.Table:
    lat, lng = parts.centers_latlng()
    data = {c.PARTITION_ID: pa.array(np.arange(parts.n_partitions, dtype=np.int64))}
    for i, name in enumerate(parts.set_names):
        data[c.class_column(name)] = pa.array(parts.tuples[:, i])
    data.update(
        {
            c.N_NODES: pa.array(parts.n_nodes),
            c.N_IMAGES: pa.array(parts.n_images),
            c.X_SUM: pa.array(parts.xyz_sum[:, 0]),
            c.Y_SUM: pa.array(parts.xyz_sum[:, 1]),
            c.Z_SUM: pa.array(parts.xyz_sum[:, 2]),
            c.LAT: pa.array(lat),
            c.LNG: pa.array(lng),
        }
    )
    return pa.table(data)


def _manifest(parts: Partitions) -> dict:
    return {
        "format": FORMAT,
        "partitions_id": parts.partitions_id,
        "sets_checksum": parts.sets_checksum,
        "set_names": list(parts.set_names),
        "n_classes": dict(zip(parts.set_names, parts.n_classes)),
        "n_nodes": parts.total_nodes,
        "n_partitions": parts.n_partitions,
    }


def save_partitions(parts: Partitions, path: str) -> None:
    """Write the artifact; a reader sees the previous complete artifact or the new one, never half."""
    members = {
        "node_partition": parts.node_partition,
        "node_lat": parts.node_lat,
        "node_lng": parts.node_lng,
        "node_center_sum": parts.node_center_sum,
    }
    for i, name in enumerate(parts.set_names):
        members[f"class_sizes/{name}"] = parts.class_sizes[i]
        members[f"class_indptr/{name}"] = parts.class_indptr[i]
        members[f"class_members/{name}"] = parts.class_members[i]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **members)
    manifest = json.dumps(_manifest(parts), indent=2, sort_keys=True).encode()
    # Written locally (a staging sibling, or a temporary directory for gs://), then published with the
    # checksummed marker last (schemas.artifacts.commit_staged).
    staging = local_staging(path)
    write_table_atomic(_table(parts), os.path.join(staging, PARTITIONS_FILE))
    with open(os.path.join(staging, MEMBERS_FILE), "wb") as handle:
        handle.write(buffer.getvalue())
    with open(os.path.join(staging, MANIFEST_FILE), "wb") as handle:
        handle.write(manifest)
    commit_staged(staging, path, {"partitions_id": parts.partitions_id})
    log.info("wrote %d partitions (%s) to %s", parts.n_partitions, parts.partitions_id, path)


def read_partitions_manifest(path: str) -> dict:
    # Marker present and every file unchanged since it was written (an edited file is refused, named).
    verify(path, "partitions", full=True)
    manifest = json.loads(read_bytes(join_path(path, MANIFEST_FILE)))
    if manifest.get("format") != FORMAT:
        raise PartitionsMismatchError(f"{path}: partitions format {manifest.get('format')}, this code reads {FORMAT}")
    return manifest


def load_partitions(path: str, expected_sets_checksum: str | None = None) -> Partitions:
    """Load and validate a partitions artifact; with ``expected_sets_checksum``, refuse other sets."""
    manifest = read_partitions_manifest(path)
    if expected_sets_checksum is not None and manifest["sets_checksum"] != expected_sets_checksum:
        raise PartitionsMismatchError(
            f"partitions {path} were built from geoclass sets {manifest['sets_checksum']}, "
            f"but the expected sets have checksum {expected_sets_checksum}"
        )
    names = tuple(manifest["set_names"])
    table = read_table(join_path(path, PARTITIONS_FILE))
    members = np.load(io.BytesIO(read_bytes(join_path(path, MEMBERS_FILE))))
    if table.num_rows != manifest["n_partitions"]:
        raise PartitionsMismatchError(
            f"{path}: {PARTITIONS_FILE} has {table.num_rows} rows, manifest says {manifest['n_partitions']}"
        )
    missing = [c.class_column(n) for n in names if c.class_column(n) not in table.column_names]
    if missing:
        raise PartitionsMismatchError(f"{path}: {PARTITIONS_FILE} lacks columns {missing} named by its manifest")

    def col(name, dtype):
        return table.column(name).to_numpy(zero_copy_only=False).astype(dtype)

    tuples = np.stack([col(c.class_column(n), np.int32) for n in names], axis=1)
    ks = tuple(int(manifest["n_classes"][n]) for n in names)
    parts = Partitions(
        set_names=names,
        n_classes=ks,
        tuples=tuples,
        n_nodes=col(c.N_NODES, np.int64),
        n_images=col(c.N_IMAGES, np.int64),
        xyz_sum=np.stack([col(c.X_SUM, np.float64), col(c.Y_SUM, np.float64), col(c.Z_SUM, np.float64)], axis=1),
        node_center_sum=members["node_center_sum"],
        class_sizes=tuple(members[f"class_sizes/{n}"] for n in names),
        class_indptr=tuple(members[f"class_indptr/{n}"] for n in names),
        class_members=tuple(members[f"class_members/{n}"] for n in names),
        node_partition=members["node_partition"],
        node_lat=members["node_lat"],
        node_lng=members["node_lng"],
        sets_checksum=manifest["sets_checksum"],
        partitions_id=manifest["partitions_id"],
    )
    _validate(parts, path, manifest)
    return parts


def _validate(parts: Partitions, path: str, manifest: dict) -> None:
    if parts.total_nodes != manifest["n_nodes"]:
        raise PartitionsMismatchError(f"{path}: {parts.total_nodes} nodes stored, manifest says {manifest['n_nodes']}")
    if int(parts.n_nodes.sum()) != parts.total_nodes:
        raise PartitionsMismatchError(f"{path}: partition node counts sum to {int(parts.n_nodes.sum())}, not {parts.total_nodes}")
    for i, name in enumerate(parts.set_names):
        k = parts.n_classes[i]
        column = parts.tuples[:, i]
        if column.size and (column.min() < 0 or column.max() >= k):
            raise PartitionsMismatchError(f"{path}: set '{name}' has class ids outside [0, {k})")
        if parts.class_sizes[i].shape != (k,) or int(parts.class_sizes[i].sum()) != parts.total_nodes:
            raise PartitionsMismatchError(f"{path}: class sizes of set '{name}' do not cover the {parts.total_nodes} nodes")
    if parts.partitions_id != partitions_id_for(parts.sets_checksum, parts.set_names):
        raise PartitionsMismatchError(f"{path}: partitions id {parts.partitions_id} does not match its sets and checksum")


def check_model_matches(parts: Partitions, model_manifest: Mapping, model_path: str = "model") -> None:
    """Refuse a model whose heads were trained on other geoclass sets than these partitions."""
    where = f"partitions {parts.partitions_id}"
    if model_manifest.get("sets_checksum") != parts.sets_checksum:
        raise PartitionsMismatchError(
            f"model {model_path} was trained on geoclass sets {model_manifest.get('sets_checksum')}, "
            f"but {where} were built from sets {parts.sets_checksum}"
        )
    model_sets = list(model_manifest.get("set_names", []))
    missing = [n for n in parts.set_names if n not in model_sets]
    if missing:
        raise PartitionsMismatchError(f"model {model_path} has no head for sets {missing} of {where} (heads: {model_sets})")
    model_k = model_manifest.get("n_classes", {})
    for name, k in zip(parts.set_names, parts.n_classes):
        if int(model_k.get(name, -1)) != k:
            raise PartitionsMismatchError(
                f"model {model_path} head '{name}' has {model_k.get(name)} classes, {where} expect {k}"
            )


def build_partitions_from_artifact(sets_dir: str, set_names: Sequence[str] | None = None) -> Partitions:
    """Build the partitions of a geoclass-sets artifact (``sets.json`` + ``assignments.parquet``)."""
    # Marker present and every file unchanged: partitions of an edited assignments.parquet would carry the
    # original sets' checksum and "match" a model trained on other classes.
    meta = read_sets_json(sets_dir, full=True)
    all_names = [s["name"] for s in meta["sets"]]
    names = list(set_names) if set_names is not None else all_names
    unknown = [n for n in names if n not in all_names]
    if unknown:
        raise PartitionsMismatchError(f"{sets_dir} has no geoclass sets {unknown} (it has: {', '.join(all_names)})")
    table = read_table(join_path(sets_dir, ASSIGNMENTS_FILE))
    if table.num_rows != meta["n_nodes"]:
        raise PartitionsMismatchError(f"{sets_dir}: {ASSIGNMENTS_FILE} has {table.num_rows} nodes, sets.json says {meta['n_nodes']}")

    def col(name):
        if name not in table.column_names:
            raise PartitionsMismatchError(f"{sets_dir}: {ASSIGNMENTS_FILE} has no column '{name}'")
        return table.column(name).to_numpy(zero_copy_only=False)

    n_images = col(c.N_IMAGES).astype(np.int64)
    xyz = np.stack([col(c.X_SUM), col(c.Y_SUM), col(c.Z_SUM)], axis=1).astype(np.float64)
    fallback = None
    empty = np.linalg.norm(xyz, axis=1) <= 1e-12
    if empty.any():
        from partition_gen.s2cells import cell_center_latlng

        fallback = np.zeros_like(xyz)
        lat, lng = cell_center_latlng(col(c.CELL_ID)[empty])
        fallback[empty] = latlng_to_xyz(lat, lng)
    k = {s["name"]: int(s["n_classes"]) for s in meta["sets"]}
    return build_partitions(
        {n: col(c.class_column(n)) for n in names},
        n_images,
        xyz,
        sets_checksum=meta["checksum"],
        set_names=names,
        n_classes=k,
        node_fallback_xyz=fallback,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m partition_gen.partitions --sets DIR --out DIR``: build the partitions artifact."""

    from schemas.cli import Parser

    parser = Parser(description=main.__doc__)
    parser.add_argument("--sets", required=True, help="geoclass-sets artifact directory")
    parser.add_argument("--out", required=True, help="partitions artifact directory to write")
    parser.add_argument("--set_names", nargs="*", default=None, help="subset of sets (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parts = build_partitions_from_artifact(args.sets, args.set_names)
    save_partitions(parts, args.out)
    log.info("partitions: %d from sets %s (%s)", parts.n_partitions, ", ".join(parts.set_names), parts.partitions_id)


if __name__ == "__main__":
    from schemas.cli import main as cli_main

    cli_main("partition_gen.partitions", "main")
