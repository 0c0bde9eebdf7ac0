"""The CPlaNet classifier of paper section 4.1: one softmax head per geoclass set on shared frozen features.

The Inception v3 backbone is frozen, so training runs on stored 2048-d features and the model here is just
the heads: ``embedding [B, D] -> {set_name: softmax [B, K_set]}``. Each head has its own sparse categorical
cross-entropy. Keras sums them into one objective, but no parameter is shared between heads, so each head's
gradient is exactly the gradient of its own loss, and RMSprop keeps per-parameter state: the heads train
independently, as in the paper, while sharing one input pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import keras

from schemas import columns as c

DEFAULT_LEARNING_RATE = 0.005
TOP_K = 5
_LAYER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


def validate_set_names(n_classes: Mapping[str, int]) -> None:
    """Set names become layer and output names, so they must be valid, distinct from the input, non-empty."""
    if not n_classes:
        raise ValueError("n_classes is empty: a model needs at least one geoclass set")
    for name, count in n_classes.items():
        if not _LAYER_NAME.match(name) or name == c.EMBEDDING:
            raise ValueError(
                f"geoclass set name {name!r} cannot name a head (letters, digits, '_', '.', '-', not '{c.EMBEDDING}')"
            )
        if int(count) < 1:
            raise ValueError(f"geoclass set {name!r} has {count} classes; a head needs at least 1")


def heads(features: keras.KerasTensor, n_classes: Mapping[str, int], seed: int | None = None) -> dict:
    """One Dense softmax head per set, named after the set, applied to ``features``."""
    return {
        name: keras.layers.Dense(
            int(count),
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed + i),
            name=name,
        )(features)
        for i, (name, count) in enumerate(n_classes.items())
    }


def build_model(
    embedding_dim: int,
    n_classes: Mapping[str, int],
    learning_rate: float = DEFAULT_LEARNING_RATE,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    seed: int | None = None,
    compile: bool = True,
    jit_compile: bool = False,
) -> keras.Model:
    """Features -> per-set probabilities; compiled with RMSprop, independent losses, top-1/top-5 per head."""
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    validate_set_names(n_classes)
    embedding = keras.Input(shape=(int(embedding_dim),), dtype="float32", name=c.EMBEDDING)
    model = keras.Model(embedding, heads(embedding, n_classes, seed), name="cplanet_heads")
    if compile:
        compile_model(model, n_classes, learning_rate, rho, momentum, epsilon, jit_compile)
    return model


def compile_model(
    model: keras.Model,
    n_classes: Mapping[str, int],
    learning_rate: float = DEFAULT_LEARNING_RATE,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    jit_compile: bool = False,
) -> None:
    model.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon
        ),
        loss={name: keras.losses.SparseCategoricalCrossentropy(name=f"{name}_xent") for name in n_classes},
        metrics={
            name: [
                keras.metrics.SparseCategoricalAccuracy(name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=TOP_K, name=f"top{TOP_K}"),
            ]
            for name in n_classes
        },
        jit_compile=jit_compile,
    )


def head_sizes(model: keras.Model) -> dict[str, int]:
    """{set name: class count} read off a model's output layers."""
    outputs = model.output if isinstance(model.output, dict) else dict(zip(model.output_names, model.outputs))
    return {name: int(tensor.shape[-1]) for name, tensor in outputs.items()}
