"""trainer.model: per-set softmax heads checked against NumPy, heads independent, RMSprop and top-k metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from schemas import columns as c
from trainer.model import DEFAULT_LEARNING_RATE, build_model, head_sizes

N_CLASSES = {"set1": 7, "set2": 3, "planet": 11}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def test_heads_are_named_after_sets_and_compute_softmax_of_an_affine_map():
    model = build_model(5, N_CLASSES, seed=1)
    assert model.input.name == c.EMBEDDING
    assert tuple(model.input.shape) == (None, 5)
    assert head_sizes(model) == N_CLASSES
    x = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)
    out = model.predict(x, verbose=0)
    assert set(out) == set(N_CLASSES)
    for name, k in N_CLASSES.items():
        kernel, bias = model.get_layer(name).get_weights()
        expected = _softmax(x.astype(np.float64) @ kernel + bias)
        assert out[name].shape == (9, k)
        np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-6)


def test_compiled_with_rmsprop_at_the_paper_learning_rate():
    model = build_model(4, {"set1": 3})
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert DEFAULT_LEARNING_RATE == 0.005
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
    assert float(build_model(4, {"set1": 3}, learning_rate=0.1).optimizer.learning_rate) == pytest.approx(0.1)


def test_each_head_trains_exactly_as_it_would_alone():
    """Independent losses: a head's update in the multi-head model equals that of a one-head model."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    labels = {name: rng.integers(0, k, size=64) for name, k in N_CLASSES.items()}
    joint = build_model(6, N_CLASSES, seed=5)
    initial = {name: joint.get_layer(name).get_weights() for name in N_CLASSES}
    joint.fit(x, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for name, k in N_CLASSES.items():
        alone = build_model(6, {name: k})
        alone.get_layer(name).set_weights(initial[name])
        alone.fit(x, {name: labels[name]}, batch_size=16, epochs=2, shuffle=False, verbose=0)
        for got, want in zip(joint.get_layer(name).get_weights(), alone.get_layer(name).get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # ...and it did move, so the comparison is not between two untouched heads.
        assert np.abs(joint.get_layer(name).get_weights()[0] - initial[name][0]).max() > 1e-3


def test_top1_and_top5_metrics_per_head_match_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    n_classes = {"set1": 12, "set2": 9}
    labels = {name: rng.integers(0, k, size=200) for name, k in n_classes.items()}
    model = build_model(8, n_classes, seed=2)
    results = model.evaluate(x, labels, batch_size=50, verbose=0, return_dict=True)
    probs = model.predict(x, verbose=0)
    for name in n_classes:
        order = np.argsort(-probs[name], axis=1)
        top1 = np.mean(order[:, 0] == labels[name])
        top5 = np.mean([labels[name][i] in order[i, :5] for i in range(200)])
        assert results[f"{name}_top1"] == pytest.approx(top1, abs=1e-6)
        assert results[f"{name}_top5"] == pytest.approx(top5, abs=1e-6)
        assert top5 > top1  # a sanity check that the two metrics are different quantities here


@pytest.mark.parametrize("bad", [{}, {"": 3}, {"has space": 3}, {c.EMBEDDING: 3}, {"set1": 0}])
def test_bad_set_names_or_sizes_are_refused_with_the_name(bad):
    with pytest.raises(ValueError, match="set|n_classes"):
        build_model(4, bad)
