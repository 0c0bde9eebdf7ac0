"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backbone_path(tmp_path_factory):
    """An Inception v3 backbone with random weights, saved once as ``.keras`` for RunInference tests."""
    import keras

    from trainer.backbone import build_backbone

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "backbone.keras"
    build_backbone(None).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_backbone_path(tmp_path_factory):
    """A small ``.keras`` backbone (299x299x3 0..255 images -> 8 features) standing in for a user's own model,
    e.g. a CLIP image encoder: fast enough for pipeline tests that are about the image path, not Inception."""
    import keras

    keras.utils.set_random_seed(3)
    images = keras.Input(shape=(299, 299, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(images)
    x = keras.layers.AveragePooling2D(pool_size=13, strides=13)(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(8, name="features")(x)
    path = tmp_path_factory.mktemp("tiny") / "tiny_backbone.keras"
    keras.Model(images, features, name="tiny_backbone").save(path)
    return path
