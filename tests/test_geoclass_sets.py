"""The geoclass-sets artifact: generation without Beam, save/load round trip, validation, checksum,
per-class figures against a direct NumPy computation, parameter sampling, and maps."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.geo import xyz_to_latlng
from partition_gen.geoclass_sets import (
    generate_geoclass_sets,
    load_geoclass_sets,
    save_geoclass_sets,
)
from partition_gen.graph import cells_table_from_points
from partition_gen.naming import display_name
from partition_gen.params import GeoclassSetSpec, default_specs, fixed_specs, sample_spec
from schemas import columns as c
from schemas.io import IncompleteArtifactError
from schemas.tables import GEOCLASS_CLASSES, SchemaError


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(45, 8, 1500), np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))]
    lng = np.r_[rng.normal(5, 12, 1500), rng.uniform(-180, 180, 500)]
    return cells_table_from_points(lat, lng, rng.normal(size=(lat.size, 12)))


@pytest.fixture(scope="module")
def specs():
    return default_specs(40, n_sampled=2, seed=3, embedding_dim=12, class_range=(30, 50), planet=(5, 60))


@pytest.fixture(scope="module")
def sets(cells, specs):
    return generate_geoclass_sets(cells, specs)


def test_generated_sets_follow_their_specs(sets, specs, cells):
    assert sets.set_names == ["set1", "set2", "set3", "set4", "planet"]
    assert sets.n_nodes == cells.num_rows
    assert np.all(np.diff(sets.cell_ids.astype(np.int64)) > 0)
    for spec in specs:
        labels = sets.assignments[spec.name]
        assert labels.dtype == np.int32 and labels.shape == (sets.n_nodes,)
        assert set(np.unique(labels).tolist()) == set(range(sets.n_classes[spec.name]))
        if spec.kind == "merge":
            assert sets.n_classes[spec.name] == spec.n_classes
        assert sets.spec(spec.name) == spec


def test_round_trip_keeps_everything(sets, tmp_path):
    out = str(tmp_path / "sets")
    save_geoclass_sets(sets, out, maps=True)
    assert sorted(os.listdir(out)) == [
        "_SUCCESS",
        "assignments.parquet",
        "classes.parquet",
        "maps",
        "sets.json",
    ]
    assert sorted(os.listdir(os.path.join(out, "maps"))) == sorted(f"{n}.png" for n in sets.set_names)
    back = load_geoclass_sets(out)
    assert back.checksum == sets.checksum and back.set_names == sets.set_names
    for name in sets.set_names:
        np.testing.assert_array_equal(back.assignments[name], sets.assignments[name])
        assert back.params[name] == json.loads(json.dumps(sets.params[name]))
    manifest = json.load(open(os.path.join(out, "sets.json")))
    assert manifest["format"] == 1 and manifest["level"] == 14 and manifest["n_nodes"] == sets.n_nodes
    assert [s["kind"] for s in manifest["sets"]] == ["merge"] * 4 + ["planet"]
    table = pq.read_table(os.path.join(out, "assignments.parquet"))
    assert table.schema.field(c.CELL_ID).type == pa.uint64()
    assert table.schema.field(c.class_column("set1")).type == pa.int32()


def test_classes_table_matches_numpy(sets):
    table = sets.classes_table()
    assert table.schema == GEOCLASS_CLASSES
    rows = table.filter(pa.compute.equal(table.column(c.SET_ID), "set2"))
    labels = sets.assignments["set2"]
    for k in [0, 7, sets.n_classes["set2"] - 1]:
        members = labels == k
        row = rows.slice(k, 1).to_pylist()[0]
        assert row[c.CLASS_ID] == k
        assert row[c.N_IMAGES] == int(sets.node_n_images[members].sum())
        assert row[c.N_NODES] == int(members.sum())
        lat, lng = xyz_to_latlng(sets.node_xyz_sum[members].sum(axis=0))
        assert row[c.LAT] == pytest.approx(float(lat)) and row[c.LNG] == pytest.approx(float(lng))


def test_checksum_covers_node_ids_and_assignments(sets):
    base = sets.checksum
    changed = type(sets)(**{**sets.__dict__, "assignments": dict(sets.assignments)})
    swapped = sets.assignments["set1"].copy()
    swapped[[0, -1]] = swapped[[-1, 0]]
    changed.assignments["set1"] = swapped
    assert changed.checksum != base
    moved = type(sets)(**{**sets.__dict__, "cell_ids": sets.cell_ids + np.uint64(2)})
    assert moved.checksum != base


def _saved(sets, tmp_path):
    out = str(tmp_path / "a")
    save_geoclass_sets(sets, out, maps=False)
    return out


def test_load_refuses_incomplete_or_inconsistent_artifacts(sets, tmp_path):
    out = _saved(sets, tmp_path)
    os.remove(os.path.join(out, "_SUCCESS"))
    with pytest.raises(IncompleteArtifactError):
        load_geoclass_sets(out)
    open(os.path.join(out, "_SUCCESS"), "w").close()

    table = pq.read_table(os.path.join(out, "assignments.parquet"))
    col = table.column_names.index(c.class_column("set1"))
    labels = table.column(col).to_numpy().copy()

    def rewrite(values):
        pq.write_table(
            table.set_column(col, c.class_column("set1"), pa.array(values, pa.int32())),
            os.path.join(out, "assignments.parquet"),
        )

    hole = labels.copy()
    hole[hole == 3] = 4  # class 3 disappears: ids no longer dense
    rewrite(hole)
    with pytest.raises(SchemaError, match="not dense"):
        load_geoclass_sets(out)
    outside = labels.copy()
    outside[0] = 10_000
    rewrite(outside)
    with pytest.raises(SchemaError, match="outside"):
        load_geoclass_sets(out)
    swapped = labels.copy()
    i, j = np.flatnonzero(labels != labels[0])[0], 0
    swapped[[i, j]] = swapped[[j, i]]
    rewrite(swapped)
    with pytest.raises(SchemaError, match="checksum"):
        load_geoclass_sets(out)
    with_null = pa.array(list(labels[:-1]) + [None], pa.int32())
    pq.write_table(
        table.set_column(col, c.class_column("set1"), with_null), os.path.join(out, "assignments.parquet")
    )
    with pytest.raises(SchemaError, match="nulls"):
        load_geoclass_sets(out)


def test_sampled_parameters_follow_table_1_rules():
    specs = [sample_spec(i, seed=11, embedding_dim=2048, class_range=(10_000, 13_000)) for i in range(3, 9)]
    assert [s.name for s in specs] == [f"set{i}" for i in range(3, 9)]
    for s in specs:
        assert 10_000 <= s.n_classes <= 13_000
        assert sum(s.alpha) == pytest.approx(1.0) and min(s.alpha) >= 0
        assert sum(s.beta) == pytest.approx(1.0) and min(s.beta) >= 0
        dims = np.asarray(s.feature_dims)
        assert np.all(np.diff(dims) > 0) and dims.min() >= 0 and dims.max() < 2048
        assert 0.5 * 2048 - 1 <= dims.size <= 0.75 * 2048 + 1
    # Same seed, same sets; more sets never change the earlier ones; another seed gives others.
    assert sample_spec(5, 11, 2048, (10_000, 13_000)) == specs[2]
    assert sample_spec(5, 12, 2048, (10_000, 13_000)) != specs[2]
    assert default_specs(100, 4, seed=1, embedding_dim=64)[:4] == default_specs(
        100, 2, seed=1, embedding_dim=64
    )
    set1, set2 = fixed_specs(9969)
    assert (set1.alpha, set1.beta, set2.alpha, set2.beta) == ((1, 0, 0), (1, 0), (1, 0, 0), (0, 1))
    assert display_name("set3") == "ClassSet 3" and display_name("planet") == "PlaNet"


def test_bad_specs_are_refused_naming_the_set(cells):
    with pytest.raises(ValueError, match="'setx'.*alpha"):
        GeoclassSetSpec("setx", n_classes=5, alpha=(0, 0, 0))
    with pytest.raises(ValueError, match="'planet'.*t_min"):
        GeoclassSetSpec("planet", kind="planet", t_min=10, t_max=5)
    with pytest.raises(ValueError, match="'big' asks for"):
        generate_geoclass_sets(cells, [GeoclassSetSpec("big", n_classes=cells.num_rows + 1)])
    with pytest.raises(ValueError, match="dimension 40"):
        generate_geoclass_sets(cells, [GeoclassSetSpec("s", n_classes=5, feature_dims=(1, 40))])
    with pytest.raises(ValueError, match="repeated: set1"):
        generate_geoclass_sets(cells, fixed_specs(5) + fixed_specs(5)[:1])


def test_a_remote_artifact_without_its_marker_is_refused(monkeypatch):
    """gs:// artifacts get the same completeness check as local ones (the marker is looked up, not assumed)."""
    from apache_beam.io.filesystems import FileSystems

    from partition_gen.geoclass_sets import load_geoclass_sets
    from schemas.io import IncompleteArtifactError

    asked = []
    monkeypatch.setattr(FileSystems, "exists", staticmethod(lambda p: asked.append(p) or False))
    with pytest.raises(IncompleteArtifactError, match="_SUCCESS"):
        load_geoclass_sets("gs://bucket/sets")
    assert asked == ["gs://bucket/sets/_SUCCESS"]
