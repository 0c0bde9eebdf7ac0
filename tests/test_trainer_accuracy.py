"""Early stopping / best-epoch export and haversine label smoothing of the trainer.

Data as in test_trainer_train: latent places with Gaussian features, grouped into classes per set.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.geo import haversine_km
from schemas import columns as c
from trainer import hparams as hp
from trainer import inputs
from trainer.job_dir import training_summary
from trainer.model import HaversineSmoothedLoss
from trainer.train import train

DIM, PLACES = 16, 12
N_CLASSES = {"set1": 4, "set2": 6}
CHECKSUM = "e" * 64


def _generate(rng, n, centres, flip=0.0):
    place = rng.integers(0, PLACES, size=n)
    x = centres[place] + rng.normal(size=(n, DIM)) * 1.5
    labels = {"set1": place % 4, "set2": place // 2}
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_acc")
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(PLACES, DIM))
    splits = {"train": _generate(rng, 600, centres), "eval": _generate(rng, 300, centres)}
    examples, sets = str(root / "examples"), str(root / "sets")
    inputs.write_examples_from_arrays(examples, splits, N_CLASSES, CHECKSUM)
    inputs.write_sets_json(sets, N_CLASSES, CHECKSUM)
    # classes.parquet: the class centres label smoothing reads (one row per set and class, shuffled order).
    rows = []
    for name, k in N_CLASSES.items():
        for cls in range(k):
            rows.append((name, cls, 10, 1, float(rng.uniform(-60, 60)), float(rng.uniform(-180, 180))))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    table = pa.table({c.SET_ID: [r[0] for r in rows], c.CLASS_ID: pa.array([r[1] for r in rows], pa.int32()),
                      c.N_IMAGES: [r[2] for r in rows], c.N_NODES: [r[3] for r in rows],
                      c.LAT: [r[4] for r in rows], c.LNG: [r[5] for r in rows]})
    pq.write_table(table, os.path.join(sets, "classes.parquet"))
    return {"root": root, "examples": examples, "sets": sets, "splits": splits, "rows": rows}


def _params(**overrides):
    base = {"epochs": 4, "batch_size": 64, "shuffle_buffer": 256, "verbose": 0, "seed": 5, "keep_checkpoints": 10}
    return hp.HParams(**{**base, **overrides})


def test_best_epoch_per_head_is_kept_and_exported(artifacts):
    job = str(artifacts["root"] / "job_best")
    result = train(artifacts["examples"], artifacts["sets"], job, _params(epochs=4, learning_rate=0.05))
    x, labels = artifacts["splits"]["eval"]
    summary = training_summary(job)
    assert summary["epochs_run"] == 4 and not summary["stopped_early"]
    for name in N_CLASSES:
        top1 = result.history[f"val_{name}_top1"]
        want = int(np.argmax(top1)) + 1  # first maximum: later equal values are no improvement
        assert summary["best_epoch"][name] == want
        # The best model's head is the head of that epoch's checkpoint, weight for weight...
        epoch_model = keras.saving.load_model(os.path.join(job, "checkpoints", f"epoch-{want:04d}.keras"))
        for got, exp in zip(result.best_model.get_layer(name).get_weights(),
                            epoch_model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, exp)
        # ... and scores the recorded best eval top-1.
        probs = result.best_model.predict(x, verbose=0)[name]
        assert np.mean(np.argmax(probs, 1) == labels[name]) == pytest.approx(max(top1), abs=1e-6)
    # The export path takes best.keras.
    from trainer.export import latest_checkpoint

    assert latest_checkpoint(job)[0].endswith("best.keras")


def test_early_stopping_stops_after_patience_epochs_without_improvement(artifacts):
    job = str(artifacts["root"] / "job_stop")
    # min_delta 1.0: no epoch after the first can count as an improvement, so patience 2 stops after epoch 3.
    params = _params(epochs=10, early_stopping_patience=2, early_stopping_min_delta=1.0)
    result = train(artifacts["examples"], artifacts["sets"], job, params)
    summary = training_summary(job)
    assert summary["stopped_early"] and summary["epochs_run"] == 3 and result.epochs_trained_now == 3
    assert summary["best_epoch"] == {"set1": 1, "set2": 1}
    # Starting again does not train past the stop; a larger patience continues (resumable change).
    again = train(artifacts["examples"], artifacts["sets"], job, params)
    assert again.epochs_trained_now == 0
    more = train(artifacts["examples"], artifacts["sets"], job, _params(epochs=5, early_stopping_patience=4,
                                                                         early_stopping_min_delta=1.0))
    assert more.epochs_trained_now == 2 and training_summary(job)["epochs_run"] == 5


def test_haversine_targets_match_a_per_class_reference(artifacts):
    centres = inputs.read_class_centres(artifacts["sets"], list(N_CLASSES))
    # The table was written in shuffled row order; centres come back indexed by class id.
    for name, cls, _, _, lat, lng in artifacts["rows"]:
        assert tuple(centres[name][cls]) == (lat, lng)
    tau = 800.0
    loss = HaversineSmoothedLoss(centres["set2"], tau)
    labels = np.array([0, 3, 5, 3])
    got = np.asarray(loss.targets(labels))
    lat, lng = centres["set2"][:, 0], centres["set2"][:, 1]
    for row, t in enumerate(labels):
        d = np.array([haversine_km(lat[t], lng[t], lat[k], lng[k]) for k in range(len(lat))])
        want = np.exp(-(d - d.min()) / tau)
        want /= want.sum()
        np.testing.assert_allclose(got[row], want, rtol=2e-4, atol=1e-6)
        assert np.argmax(got[row]) == t
    probs = np.random.default_rng(0).dirichlet(np.ones(len(lat)), size=len(labels)).astype(np.float32)
    ref = -(got * np.log(probs)).sum(axis=1).mean()
    assert float(loss(labels, probs)) == pytest.approx(ref, rel=1e-4)
    # A tiny tau is one-hot: the loss equals the sparse cross-entropy.
    sharp = HaversineSmoothedLoss(centres["set2"], 1e-3)
    sparse = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert float(sharp(labels, probs)) == pytest.approx(float(sparse), rel=1e-4)


def test_training_with_label_smoothing_resumes_and_records_tau(artifacts):
    job = str(artifacts["root"] / "job_smooth")
    train(artifacts["examples"], artifacts["sets"], job, _params(epochs=1, label_smoothing_km=500.0))
    resumed = train(artifacts["examples"], artifacts["sets"], job, _params(epochs=2, label_smoothing_km=500.0))
    whole = train(artifacts["examples"], artifacts["sets"], str(artifacts["root"] / "job_smooth_whole"),
                  _params(epochs=2, label_smoothing_km=500.0))
    for got, want in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert isinstance(resumed.model.loss["set1"], HaversineSmoothedLoss)
    assert json.loads(open(os.path.join(job, "state.json")).read())["hparams"]["label_smoothing_km"] == 500.0
    assert training_summary(job)["label_smoothing_km"] == 500.0
    with pytest.raises(ValueError, match="label_smoothing_km"):
        hp.HParams(label_smoothing_km=0)
