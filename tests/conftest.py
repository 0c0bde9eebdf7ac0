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
