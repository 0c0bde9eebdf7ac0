"""batch_predict end to end on the offline runner: a tiny multi-head .keras model, partitions, bad rows, reruns."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.combine import Method
from partition_gen.evaluation import standard_methods
from partition_gen.partitions import PartitionsMismatchError, build_partitions, save_partitions
from pipelines import batch_predict
from schemas import PREDICTIONS, Reason
from schemas import columns as c
from schemas.artifacts import write_marker
from schemas.io import read_table
from tests.test_partitions import random_sets

DIM = 8
KS = (5, 9, 14)
RUNNER = ["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]


def make_model(model_dir, set_names, ks, checksum):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(DIM,), name=c.EMBEDDING)
    hidden = keras.layers.Dense(16, activation="relu", name="shared")(inputs)
    outputs = {n: keras.layers.Dense(k, activation="softmax", name=n)(hidden) for n, k in zip(set_names, ks)}
    model = keras.Model(inputs, outputs)
    os.makedirs(model_dir, exist_ok=True)
    model.save(os.path.join(model_dir, "features_model.keras"))
    manifest = {"model_id": "tiny-model-1", "embedding_dim": DIM, "set_names": list(set_names),
                "n_classes": dict(zip(set_names, ks)), "sets_checksum": checksum}
    with open(os.path.join(model_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    write_marker(model_dir)  # as trainer.export does: the model is complete, with checksums
    return model


def write_manifest(path, n_good, seed):
    rng = np.random.default_rng(seed)
    ids = [f"photo-{i}" for i in range(n_good)]
    emb = [list(map(float, e)) for e in rng.normal(size=(n_good, DIM)).astype(np.float32)]
    ids += ["photo-nan", "photo-short", "photo-0", ""]
    emb += [[float("nan")] * DIM, [0.0] * (DIM - 1), [0.0] * DIM, [0.0] * DIM]
    pq.write_table(pa.table({c.PHOTO_ID: ids, c.EMBEDDING: pa.array(emb, type=pa.list_(pa.float32()))}), path)
    return np.array(emb[:n_good], dtype=np.float32)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bp")
    assignments, n_images, xyz_sum = random_sets(11, n_nodes=200, ks=KS)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-T")
    save_partitions(parts, str(root / "partitions"))
    model = make_model(str(root / "model"), parts.set_names, parts.n_classes, "sets-T")
    return root, parts, model


def test_rerun_of_a_date_replaces_its_output_and_bad_rows_are_dead_letters(artifacts):
    root, parts, model = artifacts
    out = root / "predictions"
    common = ["--model", str(root / "model"), "--partitions", str(root / "partitions"), "--output", str(out),
              "--run_date", "2024-05-01", "--methods", "paper", "--top_k", "3"] + RUNNER
    write_manifest(root / "m1.parquet", 12, seed=1)
    first = batch_predict.run(["--manifest", str(root / "m1.parquet")] + common)
    assert first.rows_in == 16 and first.rows_out == 12 and first.balanced
    embeddings = write_manifest(root / "m2.parquet", 20, seed=2)
    second = batch_predict.run(["--manifest", str(root / "m2.parquet")] + common)
    assert second.rows_in == 24 and second.rows_out == 20 and second.balanced

    # One complete folder for the date, no staging or old copies beside it, and only the second run's rows.
    assert sorted(os.listdir(out)) == ["run_date=2024-05-01"]
    run_dir = out / "run_date=2024-05-01"
    dead_dir = root / "predictions.dead_letters" / "run_date=2024-05-01"
    assert (run_dir / "_SUCCESS").exists() and (dead_dir / "_SUCCESS").exists()
    # The date folder holds predictions only: pandas reads it as one table of predictions, one row per photo and
    # method (dead letters live in the sibling tree).
    frame = pd.read_parquet(run_dir)
    assert list(frame.columns) == PREDICTIONS.names
    assert len(frame) == len(frame.drop_duplicates([c.PHOTO_ID, c.METHOD])) == 20 * len(standard_methods(parts.set_names))
    assert frame[c.LAT].notna().all()
    table = read_table(str(run_dir))
    methods = [m.name for m in standard_methods(parts.set_names)]
    assert table.num_rows == 20 * len(methods)
    rows = table.to_pylist()
    assert {r[c.PHOTO_ID] for r in rows} == {f"photo-{i}" for i in range(20)}
    assert {r[c.METHOD] for r in rows} == set(methods)
    assert {r[c.RUN_DATE] for r in rows} == {"2024-05-01"} and {r[c.MODEL_ID] for r in rows} == {"tiny-model-1"}

    dead = {(r[c.PHOTO_ID], r[c.REASON]) for r in read_table(str(dead_dir)).to_pylist()}
    assert dead == {("photo-nan", Reason.NAN_EMBEDDING), ("photo-short", Reason.BAD_EMBEDDING_LENGTH),
                    ("photo-0", Reason.DUPLICATE_PHOTO_ID), ("", Reason.MISSING_PHOTO_ID)}

    # Every row carries the nearest GeoNames place of its location.
    from partition_gen.places import nearest_places

    places = nearest_places([r[c.LAT] for r in rows], [r[c.LNG] for r in rows])
    assert [r[c.PLACE_NAME] for r in rows] == places.names() and all(r[c.PLACE_NAME] for r in rows)
    assert [r[c.COUNTRY_CODE] for r in rows] == list(places.country_code)
    assert [r[c.ADMIN1] for r in rows] == list(places.admin1)
    assert {c.COUNTRY_CODE, c.ADMIN1, c.PLACE_NAME} <= set(table.column_names)

    # Every row equals the combiner applied directly to the model's probabilities.
    outputs = model.predict(embeddings, verbose=0)
    by_key = {(r[c.PHOTO_ID], r[c.METHOD]): r for r in rows}
    for name in ("CPlaNet[1-3]", "ClassSet 2", "SimpleSum[1-3]"):
        method = next(m for m in standard_methods(parts.set_names) if m.name == name)
        pred = Method(method.name, method.set_names, method.rule).combiner(parts, top_k=3).predict(outputs)
        for i in range(20):
            row = by_key[(f"photo-{i}", name)]
            assert row[c.LAT] == pytest.approx(pred.lat[i], abs=1e-6)
            assert row[c.LNG] == pytest.approx(pred.lng[i], abs=1e-6)
            assert row[c.TOPK_PARTITION_IDS] == pred.topk_ids[i].tolist()
            assert row[c.PARTITIONS_ID] == parts.restrict(method.set_names).partitions_id


def test_a_model_of_other_geoclass_sets_is_refused_at_launch(artifacts, tmp_path, capsys):
    root, parts, _ = artifacts
    make_model(str(tmp_path / "other"), parts.set_names, parts.n_classes, "sets-OTHER")
    write_manifest(tmp_path / "m.parquet", 3, seed=3)
    with pytest.raises(PartitionsMismatchError, match="sets-OTHER.*sets-T"):
        batch_predict.run(["--manifest", str(tmp_path / "m.parquet"), "--model", str(tmp_path / "other"),
                           "--partitions", str(root / "partitions"), "--output", str(tmp_path / "out")] + RUNNER)
    with pytest.raises(SystemExit) as stop:
        batch_predict.run(["--manifest", str(tmp_path / "m.parquet"), "--model", str(root / "model"),
                           "--partitions", str(root / "partitions"), "--output", str(tmp_path / "out"),
                           "--run_date", "May 1"] + RUNNER)
    assert stop.value.code == 2 and "--run_date: must be YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_image_manifest_with_default_method_and_evaluation(artifacts, tmp_path):
    import keras
    import tensorflow as tf

    from pipelines import evaluate

    root, parts, _ = artifacts
    model_dir = tmp_path / "model"
    make_model(str(model_dir), parts.set_names, parts.n_classes, "sets-T")
    images = keras.Input(shape=(299, 299, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(images))
    heads = {n: keras.layers.Dense(k, activation="softmax", name=n)(pooled) for n, k in zip(parts.set_names, parts.n_classes)}
    geolocator = keras.Model(images, heads)
    geolocator.save(str(model_dir / "geolocator.keras"))
    write_marker(str(model_dir))

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    for i in range(2):
        (tmp_path / f"ok{i}.png").write_bytes(tf.io.encode_png(pixels[i]).numpy())
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    uris = [str(tmp_path / "ok0.png"), str(tmp_path / "ok1.png"), str(tmp_path / "broken.jpg"), str(tmp_path / "gone.jpg")]
    ids = ["a", "b", "c", "d"]
    manifest = tmp_path / "images.csv"
    manifest.write_text("photo_id,image_uri\n" + "".join(f"{i},{u}\n" for i, u in zip(ids, uris)))
    out = tmp_path / "pred"
    summary = batch_predict.run(["--manifest", str(manifest), "--model", str(model_dir), "--partitions",
                                 str(root / "partitions"), "--output", str(out), "--run_date", "2024-06-02"] + RUNNER)
    assert summary.rows_in == 4 and summary.rows_out == 2 and summary.balanced
    run_dir = out / "run_date=2024-06-02"
    rows = read_table(str(run_dir)).to_pylist()
    assert {(r[c.PHOTO_ID], r[c.METHOD]) for r in rows} == {("a", "CPlaNet[1-3]"), ("b", "CPlaNet[1-3]")}
    dead = {(r[c.PHOTO_ID], r[c.REASON]) for r in read_table(f"{out}.dead_letters/run_date=2024-06-02").to_pylist()}
    assert dead == {("c", Reason.NOT_AN_IMAGE), ("d", Reason.MISSING_FILE)}

    # The same photos through Keras directly: decoded by imagery.load_image like the job, then the combiner.
    from imagery import load_image

    batch = np.stack([load_image((tmp_path / f"ok{i}.png").read_bytes()) for i in range(2)])
    probs = geolocator.predict(batch, verbose=0)
    pred = Method("CPlaNet[1-3]", parts.set_names).combiner(parts).predict(probs)
    by_id = {r[c.PHOTO_ID]: r for r in rows}
    assert [by_id["a"][c.LAT], by_id["b"][c.LAT]] == pytest.approx(pred.lat.tolist(), abs=1e-5)

    # Ground truth at the predicted place of "a" and 1000 km north of "b": hits at 1 km and at 2500 km only.
    truth = tmp_path / "truth.csv"
    lat_b = by_id["b"][c.LAT] + (9.0 if by_id["b"][c.LAT] < 0 else -9.0)
    truth.write_text(f"id,y,x\na,{by_id['a'][c.LAT]},{by_id['a'][c.LNG]}\nb,{lat_b},{by_id['b'][c.LNG]}\n")
    report = evaluate.run(["--predictions", str(run_dir), "--truth", str(truth), "--truth_columns", "id,y,x",
                           "--out", str(tmp_path / "eval")])
    acc = report["methods"]["CPlaNet[1-3]"]["accuracy"]
    assert acc["1"] == 0.5 and acc["750"] == 0.5 and acc["2500"] == 1.0
    assert (tmp_path / "eval" / "evaluation.md").exists() and (tmp_path / "eval" / "accuracy.png").exists()


def test_an_all_bad_night_fails_and_leaves_the_previous_output_of_its_date(artifacts, tmp_path):
    root, parts, _ = artifacts
    out = tmp_path / "predictions"
    common = ["--model", str(root / "model"), "--partitions", str(root / "partitions"), "--output", str(out),
              "--run_date", "2024-05-03"] + RUNNER
    write_manifest(tmp_path / "good.parquet", 6, seed=4)
    batch_predict.run(["--manifest", str(tmp_path / "good.parquet")] + common)
    run_dir = out / "run_date=2024-05-03"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({c.PHOTO_ID: ["x", "y", ""], c.EMBEDDING: pa.array([[float("nan")] * DIM, [0.0], [0.0] * DIM],
                                                                             type=pa.list_(pa.float32()))}), bad)
    from pipelines.common import JobCheckError

    with pytest.raises(JobCheckError, match="100% of the rows are dead letters"):
        batch_predict.run(["--manifest", str(bad)] + common)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    assert sorted(os.listdir(out)) == ["run_date=2024-05-03"]  # no staging folder left either
    # An empty manifest fails too, unless an empty night is expected.
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({c.PHOTO_ID: pa.array([], pa.string()), c.EMBEDDING: pa.array([], pa.list_(pa.float32()))}),
                   empty)
    with pytest.raises(JobCheckError, match="read no rows"):
        batch_predict.run(["--manifest", str(empty)] + common)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    summary = batch_predict.run(["--manifest", str(empty), "--allow_empty"] + common)
    assert (summary.rows_in, summary.rows_out) == (0, 0)


def test_a_model_with_a_random_backbone_is_refused_unless_allowed(artifacts, tmp_path, caplog):
    from trainer.export import RandomBackboneError

    root, parts, _ = artifacts
    model_dir = tmp_path / "model"
    make_model(str(model_dir), parts.set_names, parts.n_classes, "sets-T")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["backbone"] = {"backbone": "inception_v3", "weights": "random", "weights_sha256": "0" * 64,
                            "feature_dim": DIM}
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    write_marker(str(model_dir))  # a complete model that says its backbone is random
    write_manifest(tmp_path / "m.parquet", 6, seed=3)
    args = ["--manifest", str(tmp_path / "m.parquet"), "--model", str(model_dir), "--partitions",
            str(root / "partitions"), "--output", str(tmp_path / "out"), "--run_date", "2024-06-03"] + RUNNER
    with pytest.raises(RandomBackboneError, match="random weights.*--allow_random_backbone"):
        batch_predict.run(args)
    assert not (tmp_path / "out").exists()
    caplog.set_level("WARNING")
    summary = batch_predict.run(args + ["--allow_random_backbone"])
    assert summary.rows_out == 6
    assert sum("random weights" in r.getMessage() for r in caplog.records) == 1
