"""Partitions: counts and ids against a plain-Python reference, restriction, artifact round trip and refusals."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.geo import latlng_to_xyz
from partition_gen.partitions import (
    PartitionsMismatchError,
    build_partitions,
    build_partitions_from_artifact,
    check_model_matches,
    load_partitions,
    save_partitions,
)
from schemas import columns as c


def random_sets(seed: int, n_nodes: int = 500, ks=(7, 12, 30)):
    """Geoclass-like sets: each class is the Voronoi region of a random seed point (contiguous)."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n_nodes)))
    lng = rng.uniform(-180, 180, n_nodes)
    xyz = latlng_to_xyz(lat, lng)
    assignments = {}
    for i, k in enumerate(ks):
        seeds = xyz[rng.choice(n_nodes, k, replace=False)]
        assignments[f"set{i + 1}"] = np.argmax(xyz @ seeds.T, axis=1).astype(np.int32)
    n_images = rng.integers(1, 20, n_nodes)
    # Each node's images lie near its centre: a sum of slightly jittered unit vectors.
    xyz_sum = n_images[:, None] * (xyz + rng.normal(0, 0.01, xyz.shape))
    return assignments, n_images, xyz_sum


def reference_partitions(assignments, n_images, xyz_sum):
    """Plain dict-of-tuples aggregation."""
    names = list(assignments)
    groups = defaultdict(list)
    for node in range(len(n_images)):
        groups[tuple(int(assignments[n][node]) for n in names)].append(node)
    return {t: (len(nodes), int(n_images[nodes].sum()), xyz_sum[nodes].sum(axis=0)) for t, nodes in groups.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partitions_are_the_distinct_class_tuples(seed):
    assignments, n_images, xyz_sum = random_sets(seed)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="abc")
    ref = reference_partitions(assignments, n_images, xyz_sum)
    assert parts.n_partitions == len(ref)
    assert [tuple(r) for r in parts.tuples.tolist()] == sorted(ref)
    for p, row in enumerate(parts.tuples.tolist()):
        nodes, images, xyz = ref[tuple(row)]
        assert parts.n_nodes[p] == nodes and parts.n_images[p] == images
        np.testing.assert_allclose(parts.xyz_sum[p], xyz, rtol=1e-12, atol=1e-12)
    # node -> partition is consistent with the tuples, and the class index lists exactly the right partitions.
    for i, name in enumerate(parts.set_names):
        np.testing.assert_array_equal(parts.tuples[parts.node_partition, i], assignments[name])
        np.testing.assert_array_equal(parts.class_sizes[i], np.bincount(assignments[name], minlength=parts.n_classes[i]))
        for cls in range(parts.n_classes[i]):
            members = parts.class_members[i][parts.class_indptr[i][cls] : parts.class_indptr[i][cls + 1]]
            np.testing.assert_array_equal(members, np.flatnonzero(parts.tuples[:, i] == cls))


def test_restrict_equals_building_from_the_subset():
    assignments, n_images, xyz_sum = random_sets(3)
    full = build_partitions(assignments, n_images, xyz_sum, sets_checksum="abc")
    for subset in (["set1"], ["set1", "set3"], ["set3", "set2"]):
        direct = build_partitions(assignments, n_images, xyz_sum, sets_checksum="abc", set_names=subset)
        restricted = full.restrict(subset)
        np.testing.assert_array_equal(restricted.tuples, direct.tuples)
        np.testing.assert_array_equal(restricted.n_nodes, direct.n_nodes)
        np.testing.assert_array_equal(restricted.n_images, direct.n_images)
        np.testing.assert_array_equal(restricted.node_partition, direct.node_partition)
        np.testing.assert_allclose(restricted.xyz_sum, direct.xyz_sum, rtol=1e-12)
        assert restricted.partitions_id == direct.partitions_id != full.partitions_id


def test_nodes_without_images_need_and_use_their_cell_centres():
    assignments = {"set1": np.array([0, 0, 1, 1], np.int32), "set2": np.array([0, 1, 1, 1], np.int32)}
    n_images = np.array([2, 0, 0, 3])
    xyz = latlng_to_xyz([10, 20, 30, 40], [0, 0, 0, 0])
    xyz_sum = xyz * n_images[:, None]
    with pytest.raises(ValueError, match="no training images"):
        build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x", node_fallback_xyz=xyz)
    lat, _ = parts.centers_latlng()
    # Partition (0, 1) holds only node 1, which has no image: its centre is the node's cell centre.
    p = [tuple(t) for t in parts.tuples.tolist()].index((0, 1))
    assert lat[p] == pytest.approx(20.0)


def test_save_load_round_trip_and_refusals(tmp_path):
    assignments, n_images, xyz_sum = random_sets(4)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-A")
    out = str(tmp_path / "partitions")
    save_partitions(parts, out)
    save_partitions(parts, out)  # a rerun replaces the artifact in place
    assert sorted(os.listdir(tmp_path)) == ["partitions"]
    loaded = load_partitions(out, expected_sets_checksum="sets-A")
    for name in ("tuples", "n_nodes", "n_images", "xyz_sum", "node_partition", "node_center_sum"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(parts, name))
    for a, b in zip(loaded.class_members, parts.class_members):
        np.testing.assert_array_equal(a, b)
    assert loaded.partitions_id == parts.partitions_id and loaded.n_classes == parts.n_classes

    with pytest.raises(PartitionsMismatchError, match="sets-A.*sets-B|sets-B.*sets-A"):
        load_partitions(out, expected_sets_checksum="sets-B")
    manifest = {"sets_checksum": "sets-A", "set_names": ["set1", "set2"], "n_classes": {"set1": 7, "set2": 12}}
    with pytest.raises(PartitionsMismatchError, match="no head for sets \\['set3'\\]"):
        check_model_matches(loaded, manifest, "m.keras")
    manifest = {"sets_checksum": "sets-A", "set_names": list(parts.set_names), "n_classes": {"set1": 7, "set2": 12, "set3": 31}}
    with pytest.raises(PartitionsMismatchError, match="head 'set3' has 31 classes.*expect 30"):
        check_model_matches(loaded, manifest, "m.keras")
    manifest["sets_checksum"] = "other"
    with pytest.raises(PartitionsMismatchError, match="other.*sets-A"):
        check_model_matches(loaded, manifest, "m.keras")

    os.remove(os.path.join(out, "_SUCCESS"))
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        load_partitions(out)


def test_build_from_geoclass_sets_artifact(tmp_path):
    assignments, n_images, xyz_sum = random_sets(5, ks=(5, 9))
    sets_dir = tmp_path / "sets"
    sets_dir.mkdir()
    table = {c.CELL_ID: pa.array(np.arange(1, 501, dtype=np.uint64) * 16), c.N_IMAGES: pa.array(n_images.astype(np.int64))}
    table.update({c.X_SUM: xyz_sum[:, 0], c.Y_SUM: xyz_sum[:, 1], c.Z_SUM: xyz_sum[:, 2]})
    table.update({c.class_column(n): pa.array(a) for n, a in assignments.items()})
    pq.write_table(pa.table(table), sets_dir / "assignments.parquet")
    meta = {"format": 1, "checksum": "cafe", "level": 14, "n_nodes": 500,
            "sets": [{"name": n, "kind": "merge", "n_classes": int(a.max()) + 1, "params": {}} for n, a in assignments.items()]}
    (sets_dir / "sets.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        build_partitions_from_artifact(str(sets_dir))
    (sets_dir / "_SUCCESS").touch()
    parts = build_partitions_from_artifact(str(sets_dir))
    ref = reference_partitions(assignments, n_images, xyz_sum)
    assert parts.sets_checksum == "cafe" and parts.set_names == ("set1", "set2")
    assert parts.n_partitions == len(ref)
    with pytest.raises(PartitionsMismatchError, match="no geoclass sets \\['planet'\\]"):
        build_partitions_from_artifact(str(sets_dir), ["set1", "planet"])


def test_reads_the_artifact_written_by_geoclass_sets(tmp_path):
    from partition_gen.geoclass_sets import GeoclassSets, save_geoclass_sets

    assignments, n_images, xyz_sum = random_sets(6, n_nodes=300, ks=(6, 11))
    sets = GeoclassSets(level=14, cell_ids=np.arange(1, 301, dtype=np.uint64) * 64, node_n_images=n_images.astype(np.int64),
                        node_xyz_sum=xyz_sum, set_names=list(assignments), assignments=dict(assignments),
                        n_classes={n: int(a.max()) + 1 for n, a in assignments.items()},
                        params={n: {} for n in assignments}, kinds={n: "merge" for n in assignments})
    save_geoclass_sets(sets, str(tmp_path / "sets"), maps=False)
    parts = build_partitions_from_artifact(str(tmp_path / "sets"))
    assert parts.sets_checksum == sets.checksum
    assert parts.n_partitions == len(reference_partitions(assignments, n_images, xyz_sum))
    np.testing.assert_array_equal(parts.tuples[parts.node_partition, 1], assignments["set2"])
