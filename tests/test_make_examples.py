"""make_examples: labels from a tiny geoclass-sets artifact, md5 split, GZIP TFRecord shards, examples.json."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s2sphere
import tensorflow as tf

from pipelines import make_examples as me
from schemas import Reason, SchemaError
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, IncompleteArtifactError, read_table
from schemas.tfrecord import feature_spec

DIM = 8
SETS = ("set1", "planet")


def _cell(lat, lng, level=14) -> int:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lng)).parent(level).id()


def _write_photos(directory, rows, emb):
    directory.mkdir()
    table = pa.table(
        {
            c.PHOTO_ID: [r[0] for r in rows],
            c.LAT: [r[1] for r in rows],
            c.LNG: [r[2] for r in rows],
            c.EMBEDDING: pa.array(list(emb), type=pa.list_(pa.float32())),
            c.CELL_ID: pa.array([r[3] for r in rows], type=pa.uint64()),
        }
    )
    pq.write_table(table, directory / "part-0.parquet", row_group_size=64)
    (directory / SUCCESS_MARKER).touch()


def _write_sets(directory, cells, labels, level=14):
    directory.mkdir()
    columns = {c.CELL_ID: pa.array(cells, type=pa.uint64()), c.N_IMAGES: pa.array(np.ones(len(cells), np.int64))}
    for j, name in enumerate(SETS):
        columns[c.class_column(name)] = pa.array(labels[:, j], type=pa.int32())
    pq.write_table(pa.table(columns), directory / me.ASSIGNMENTS)
    manifest = {
        "format": 1,
        "checksum": "f" * 64,
        "level": level,
        "n_nodes": len(cells),
        "sets": [{"name": n, "kind": "merge", "n_classes": int(labels[:, j].max()) + 1, "params": {}} for j, n in enumerate(SETS)],
    }
    (directory / me.SETS_JSON).write_text(json.dumps(manifest))
    (directory / SUCCESS_MARKER).touch()


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    lat = rng.uniform(35, 36, size=n)
    lng = rng.uniform(139, 140, size=n)
    rows = [(f"img{i:04d}", float(lat[i]), float(lng[i]), _cell(lat[i], lng[i])) for i in range(n)]
    rows.append(("stray", 0.0, 0.0, _cell(0.0, 0.0)))  # a cell the sets never saw
    emb = rng.normal(size=(len(rows), DIM)).astype(np.float32)
    _write_photos(tmp_path / "photos", rows, emb)
    cells = np.array(sorted({r[3] for r in rows[:-1]}), dtype=np.uint64)
    labels = np.stack([rng.integers(0, 7, len(cells)), rng.integers(0, 3, len(cells))], axis=1).astype(np.int32)
    _write_sets(tmp_path / "sets", cells, labels)
    return tmp_path, rows, emb, dict(zip(cells.tolist(), labels.tolist()))


def _md5_fraction(photo_id: str) -> float:
    return int(hashlib.md5(photo_id.encode()).hexdigest()[:16], 16) / 2**64


def _read_examples(paths):
    spec = feature_spec(DIM, SETS)
    data = tf.data.TFRecordDataset([str(p) for p in paths], compression_type="GZIP").map(
        lambda s: tf.io.parse_single_example(s, spec)
    )
    return {ex[c.PHOTO_ID].numpy().decode(): ex for ex in data}


def test_examples_carry_the_right_labels_split_and_counts(inputs):
    tmp, rows, emb, label_of_cell = inputs
    out = tmp / "examples"
    summary = me.run(
        [
            f"--photos={tmp / 'photos'}",
            f"--geoclass_sets={tmp / 'sets'}",
            f"--output={out}",
            "--eval_fraction=0.25",
            "--train_shards=3",
            "--eval_shards=2",
        ]
    )
    assert summary.rows_in == len(rows) and summary.rows_out == len(rows) - 1
    assert summary.dead_letters == {Reason.UNKNOWN_CELL: 1}
    assert (out / SUCCESS_MARKER).exists()
    train = sorted(out.glob("train-*-of-00003.tfrecord.gz"))
    evals = sorted(out.glob("eval-*-of-00002.tfrecord.gz"))
    assert [p.name for p in train] == [f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    assert len(evals) == 2

    got_train, got_eval = _read_examples(train), _read_examples(evals)
    want_eval = {r[0] for r in rows[:-1] if _md5_fraction(r[0]) < 0.25}
    assert set(got_eval) == want_eval and set(got_train) == {r[0] for r in rows[:-1]} - want_eval
    assert 0.15 < len(want_eval) / (len(rows) - 1) < 0.35
    for i, (photo_id, lat, lng, cell) in enumerate(rows[:-1]):
        ex = got_eval.get(photo_id) or got_train[photo_id]
        assert [int(ex[c.label_column(n)]) for n in SETS] == label_of_cell[cell]
        np.testing.assert_allclose(ex[c.EMBEDDING].numpy(), emb[i])
        assert abs(float(ex[c.LAT]) - lat) < 1e-4 and abs(float(ex[c.LNG]) - lng) < 1e-4

    manifest = json.loads((out / me.EXAMPLES_JSON).read_text())
    assert manifest["counts"] == {"train": len(got_train), "eval": len(got_eval)}
    assert manifest["set_names"] == list(SETS) and manifest["embedding_dim"] == DIM
    assert manifest["sets_checksum"] == "f" * 64
    dead = read_table(f"{out}.dead_letters").to_pylist()
    assert [(d[c.PHOTO_ID], d[c.REASON]) for d in dead] == [("stray", Reason.UNKNOWN_CELL)]


def test_sets_at_another_level_are_refused_at_launch(inputs):
    tmp, rows, _emb, _labels = inputs
    other = tmp / "sets_level10"
    _write_sets(other, np.array([_cell(35.5, 139.5, 10)], np.uint64), np.zeros((1, 2), np.int32), level=10)
    with pytest.raises(SchemaError, match="level 14.*level 10"):
        me.run([f"--photos={tmp / 'photos'}", f"--geoclass_sets={other}", f"--output={tmp / 'x'}"])
    (other / SUCCESS_MARKER).unlink()
    with pytest.raises(IncompleteArtifactError, match=SUCCESS_MARKER):
        me.run([f"--photos={tmp / 'photos'}", f"--geoclass_sets={other}", f"--output={tmp / 'x'}"])
    assert not (tmp / "x").exists()
