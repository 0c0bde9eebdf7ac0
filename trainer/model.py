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
import numpy as np

from schemas import columns as c

DEFAULT_LEARNING_RATE = 0.005
TOP_K = 5
EARTH_RADIUS_KM = 6371.0
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


@keras.saving.register_keras_serializable(package="cplanet")
class HaversineSmoothedLoss(keras.losses.Loss):
    """Cross-entropy against haversine-smoothed soft targets (PIGEON, CVPR 2024), from sparse labels.

    For a photo of class t the target of class c is exp(-(d(c, t) - d_min) / tau) normalised over c, with d
    the great-circle distance between class centres. d_min = d(t, t) = 0, so the target is
    softmax(-d(., t) / tau). The targets are formed per batch from the K class centres, never stored per
    example (a K x K table would be 400 MB for 10,000 classes); labels stay sparse, so the top-1/top-5
    metrics are unchanged.
    """

    def __init__(self, centres_latlng, tau_km: float, name: str = "haversine_xent", **kwargs):
        super().__init__(name=name, **kwargs)
        centres = np.asarray(centres_latlng, dtype=np.float64).reshape(-1, 2)
        if not tau_km > 0:
            raise ValueError(f"tau_km must be > 0, got {tau_km}")
        self.centres_latlng = centres
        self.tau_km = float(tau_km)
        lat, lng = np.radians(centres[:, 0]), np.radians(centres[:, 1])
        self._xyz = np.stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)], axis=1).astype(
            np.float32
        )

    def targets(self, y_true):
        """Soft targets [B, K] for labels [B] (or [B, 1])."""
        from keras import ops

        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        xyz = ops.convert_to_tensor(self._xyz)
        cos = ops.matmul(ops.take(xyz, labels, axis=0), ops.transpose(xyz))
        # The angle through atan2 of the cross-product norm is accurate at small distances, unlike arccos.
        sin = ops.sqrt(ops.maximum(1.0 - cos * cos, 0.0))
        distance = EARTH_RADIUS_KM * ops.arctan2(sin, cos)
        return ops.softmax(-distance / self.tau_km, axis=-1)

    def call(self, y_true, y_pred):
        from keras import ops

        soft = self.targets(y_true)
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        return -ops.sum(soft * log_p, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"centres_latlng": self.centres_latlng.tolist(), "tau_km": self.tau_km})
        return config


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
    class_centres: Mapping[str, np.ndarray] | None = None,
    label_smoothing_km: float | None = None,
) -> keras.Model:
    """Features -> per-set probabilities; compiled with RMSprop, independent losses, top-1/top-5 per head."""
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    validate_set_names(n_classes)
    embedding = keras.Input(shape=(int(embedding_dim),), dtype="float32", name=c.EMBEDDING)
    model = keras.Model(embedding, heads(embedding, n_classes, seed), name="cplanet_heads")
    if compile:
        compile_model(
            model, n_classes, learning_rate, rho, momentum, epsilon, jit_compile, class_centres, label_smoothing_km
        )
    return model


def compile_model(
    model: keras.Model,
    n_classes: Mapping[str, int],
    learning_rate: float = DEFAULT_LEARNING_RATE,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    jit_compile: bool = False,
    class_centres: Mapping[str, np.ndarray] | None = None,
    label_smoothing_km: float | None = None,
) -> None:
    """RMSprop; per head sparse cross-entropy, or with ``label_smoothing_km`` the haversine-smoothed one
    (``class_centres[name]``: (K, 2) lat/lng of the head's class centres)."""
    if label_smoothing_km is not None:
        missing = [name for name in n_classes if class_centres is None or name not in class_centres]
        if missing:
            raise ValueError(f"label smoothing needs the class centres of sets {missing}")
        for name, k in n_classes.items():
            if len(class_centres[name]) != int(k):
                raise ValueError(f"set '{name}': {len(class_centres[name])} class centres for {k} classes")
        losses = {
            name: HaversineSmoothedLoss(class_centres[name], label_smoothing_km, name=f"{name}_xent")
            for name in n_classes
        }
    else:
        losses = {name: keras.losses.SparseCategoricalCrossentropy(name=f"{name}_xent") for name in n_classes}
    model.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon
        ),
        loss=losses,
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
