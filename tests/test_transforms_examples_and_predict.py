"""TestPipeline + assert_that on beam.Create input for ``pipelines.make_examples.MakeExamples`` and the
``pipelines.batch_predict`` composites ReadPhotosToPredict and RunHeads (CombineHeads has its own in
test_refine_confidence.py).

References: a pandas merge of photos and node labels, the md5 rule written out with hashlib, and NumPy
softmax heads.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import batch_predict, make_examples
from schemas import Reason
from schemas import columns as c

DIM = 3
SETS = ("set1", "set2")


def _md5_eval(photo_id: str, fraction: float) -> bool:
    return int(hashlib.md5(photo_id.encode()).hexdigest()[:16], 16) / 2**64 < fraction


def _decode(record: bytes) -> tuple:
    features = tf.train.Example.FromString(record).features.feature
    embedding = tuple(round(v, 5) for v in features[c.EMBEDDING].float_list.value)
    labels = tuple(int(features[c.label_column(n)].int64_list.value[0]) for n in SETS)
    return features[c.PHOTO_ID].bytes_list.value[0].decode(), embedding, labels


def test_make_examples_labels_each_photo_by_its_node_and_splits_by_the_md5_rule(tmp_path):
    rng = np.random.default_rng(0)
    cells = np.array([11, 22, 33, 44], np.uint64)
    labels = {"set1": np.array([0, 1, 1, 2], np.int32), "set2": np.array([3, 0, 2, 1], np.int32)}
    pq.write_table(
        pa.table({c.CELL_ID: pa.array(cells[::-1])} | {c.class_column(n): pa.array(v[::-1]) for n, v in labels.items()}),
        tmp_path / make_examples.ASSIGNMENTS,
    )
    info = make_examples.SetsInfo(str(tmp_path), SETS, {"set1": 3, "set2": 4}, "f" * 64, 10)
    n = 60
    photos = pd.DataFrame(
        {
            c.PHOTO_ID: [f"photo{i}" for i in range(n)],
            c.LAT: rng.uniform(-80, 80, n),
            c.LNG: rng.uniform(-170, 170, n),
            c.CELL_ID: rng.choice(np.array([11, 22, 33, 44, 55], np.uint64), n),  # 55 is no node
            c.EMBEDDING: list(np.round(rng.normal(size=(n, DIM)), 3).astype(np.float32)),
        }
    )
    batches = [
        pa.RecordBatch.from_pydict(
            {
                c.PHOTO_ID: part[c.PHOTO_ID].tolist(),
                c.LAT: part[c.LAT].tolist(),
                c.LNG: part[c.LNG].tolist(),
                c.EMBEDDING: pa.array([list(e) for e in part[c.EMBEDDING]], pa.list_(pa.float32())),
                c.CELL_ID: pa.array(part[c.CELL_ID].to_numpy(), pa.uint64()),
            }
        )
        for part in (photos.iloc[:25], photos.iloc[25:])
    ]
    nodes = pd.DataFrame({c.CELL_ID: cells} | {n: v for n, v in labels.items()})
    labelled = photos.merge(nodes, on=c.CELL_ID, how="inner")
    expected = {
        split: [
            (row[c.PHOTO_ID], tuple(round(float(v), 5) for v in row[c.EMBEDDING]), (int(row["set1"]), int(row["set2"])))
            for _, row in labelled.iterrows()
            if _md5_eval(row[c.PHOTO_ID], 0.3) == (split == "eval")
        ]
        for split in ("train", "eval")
    }
    assert expected["train"] and expected["eval"]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(batches) | make_examples.MakeExamples(info, eval_fraction=0.3)
        assert_that(out["train"] | "Decode train" >> beam.Map(_decode), equal_to(expected["train"]), label="train")
        assert_that(out["eval"] | "Decode eval" >> beam.Map(_decode), equal_to(expected["eval"]), label="eval")
        dead = out["dead_letters"] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON]))
        unknown = photos[photos[c.CELL_ID] == 55][c.PHOTO_ID]
        assert_that(dead, equal_to([(pid, Reason.UNKNOWN_CELL) for pid in unknown]), label="dead")


def test_read_photos_to_predict_keys_sound_embeddings_and_dead_letters_the_rest():
    ids = ["a", "b", "c", "a", "d"]
    embeddings = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [1.0, 2.0], [9.0, 9.0, 9.0], [np.nan, 0.0, 0.0]]
    batch = pa.RecordBatch.from_pydict(
        {
            c.PHOTO_ID: ids,
            c.EMBEDDING: pa.array(embeddings, pa.list_(pa.float32())),
            c.ROW_KEY: pa.array(np.arange(5, dtype=np.int64)),
        }
    )
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([batch]) | batch_predict.ReadPhotosToPredict(batch_predict.FEATURES, DIM)
        valid = out[batch_predict.VALID] | beam.Map(lambda kv: (kv[0], kv[1].dtype.name, kv[1].tolist()))
        assert_that(valid, equal_to([("a", "float32", [1.0, 2.0, 3.0]), ("b", "float32", [0.0, 0.0, 1.0])]), label="valid")
        dead = out[batch_predict.DEAD] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON]))
        want = [("c", Reason.BAD_EMBEDDING_LENGTH), ("a", Reason.DUPLICATE_PHOTO_ID), ("d", Reason.NAN_EMBEDDING)]
        assert_that(dead, equal_to(want), label="dead")


WEIGHTS = {"set1": np.arange(6.0).reshape(DIM, 2) / 10, "set2": -np.arange(9.0).reshape(DIM, 3) / 7}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


class _Heads:
    weights = WEIGHTS


class _SoftmaxHeads(ModelHandler):
    """A stand-in model: one linear softmax head per set; a batch with a negative input fails as a whole."""

    def __init__(self):
        super().__init__(min_batch_size=2, max_batch_size=2)

    def load_model(self):
        return _Heads()  # Beam shares the model through a weak reference: an object, not a bare dict

    def run_inference(self, batch, model, inference_args=None):
        if any((np.asarray(x) < 0).any() for x in batch):
            raise ValueError("negative input")
        return [PredictionResult(x, {n: _softmax(np.asarray(x) @ w) for n, w in model.weights.items()}, "m1") for x in batch]

    def batch_elements_kwargs(self):
        return {"min_batch_size": 2, "max_batch_size": 2}


def test_run_heads_gives_every_head_per_photo_and_dead_letters_a_failed_batch():
    good = {f"g{i}": np.full(DIM, i, np.float32) for i in range(4)}
    items = list(good.items()) + [("bad", np.array([1.0, -1.0, 0.0], np.float32))]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(items) | batch_predict.RunHeads(_SoftmaxHeads())
        results = out[batch_predict.VALID] | beam.Map(
            lambda kv: ("ok", kv[0], kv[1].model_id, {n: v.tolist() for n, v in kv[1].inference.items()})
        )
        dead = out[batch_predict.DEAD] | beam.Map(lambda d: ("dead", d[c.PHOTO_ID], d[c.REASON], None))

        def check(actual):
            ok = {pid: (model_id, heads) for kind, pid, model_id, heads in actual if kind == "ok"}
            failed = {pid: reason for kind, pid, reason, _ in actual if kind == "dead"}
            # Every photo comes out exactly once: predicted, or dead-lettered with its failed batch (of two).
            assert sorted(ok) + sorted(failed) and set(ok) | set(failed) == set(good) | {"bad"}
            assert not set(ok) & set(failed) and "bad" in failed and len(failed) <= 2
            assert set(failed.values()) == {Reason.INFERENCE_ERROR}
            for pid, (model_id, heads) in ok.items():
                assert model_id == "m1"
                for name, w in WEIGHTS.items():
                    np.testing.assert_allclose(heads[name], _softmax(good[pid].astype(np.float64) @ w), atol=1e-8)

        assert_that((results, dead) | beam.Flatten(), check)
