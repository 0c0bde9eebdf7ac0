"""trainer.backbone.load_backbone: which backbone, which weights, and a checksum that follows the weights."""

from __future__ import annotations

import keras
import pytest

from trainer import backbone as bb


def test_inception_info_and_a_weights_file_give_the_same_checksum(tmp_path):
    keras.utils.set_random_seed(5)
    model, info = bb.load_backbone("inception_v3", "random")
    assert info["backbone"] == "inception_v3" and info["weights"] == "random"
    assert info["feature_dim"] == bb.FEATURE_DIM and info["image_size"] == bb.IMAGE_SIZE
    assert tuple(model.output.shape) == (None, bb.FEATURE_DIM) and not model.trainable_weights
    # Save the Inception part's weights as a user would hold them, load them back through the file path.
    weights = str(tmp_path / "inception_v3_notop.weights.h5")
    model.get_layer("inception_v3").save_weights(weights)
    keras.utils.set_random_seed(6)  # the rebuilt model starts from other random weights, then loads the file
    _, info_file = bb.load_backbone("inception_v3", weights)
    assert info_file["weights"] == weights and info_file["weights_sha256"] == info["weights_sha256"]


def test_keras_backbone_file_random_and_weights(tmp_path, tiny_backbone_path):
    model, info = bb.load_backbone(str(tiny_backbone_path))
    assert info["backbone"] == info["weights"] == str(tiny_backbone_path) and info["feature_dim"] == 8
    assert bb.weights_checksum(keras.saving.load_model(tiny_backbone_path)) == info["weights_sha256"]
    _, random_info = bb.load_backbone(str(tiny_backbone_path), "random")
    assert random_info["weights"] == "random" and random_info["weights_sha256"] != info["weights_sha256"]
    weights = str(tmp_path / "tiny.weights.h5")
    model.save_weights(weights)
    _, file_info = bb.load_backbone(str(tiny_backbone_path), weights)
    assert file_info["weights"] == weights and file_info["weights_sha256"] == info["weights_sha256"]


def test_wrong_backbones_are_one_line_errors(tmp_path, tiny_backbone_path):
    small = keras.Input(shape=(224, 224, 3))
    keras.Model(small, keras.layers.GlobalAveragePooling2D()(small)).save(tmp_path / "clip224.keras")
    image = keras.Input(shape=(299, 299, 3))
    keras.Model(image, keras.layers.Conv2D(4, 3)(image)).save(tmp_path / "maps.keras")
    cases = [
        (("resnet50", None), "give 'inception_v3' or a path to a .keras model file"),
        ((str(tmp_path / "nope.keras"), None), "no such file"),
        ((str(tmp_path / "clip224.keras"), None), "not one [batch, 299, 299, 3] image input"),
        ((str(tmp_path / "maps.keras"), None), "not one [batch, D] feature vector"),
        ((str(tiny_backbone_path), "imagenet"), "is for --backbone inception_v3"),
        (("inception_v3", str(tmp_path / "nope.h5")), "no such file"),
    ]
    for args, says in cases:
        with pytest.raises(bb.BackboneError) as error:
            bb.load_backbone(*args)
        assert says in str(error.value) and "\n" not in str(error.value), args


def test_imagenet_comes_from_the_keras_cache_or_fails_fast_offline(tmp_path, monkeypatch):
    cache = tmp_path / "keras_home" / "models"
    monkeypatch.setattr(bb, "_keras_cache_dirs", lambda: [str(cache)])
    asked = []
    monkeypatch.setattr(bb, "_reachable", lambda host, port=443, timeout=3.0: asked.append(host) or False)
    with pytest.raises(bb.BackboneError, match="not in the Keras cache and storage.googleapis.com is unreachable"):
        bb.imagenet_weights_file()
    assert asked == ["storage.googleapis.com"]
    # With the file in the cache the network is never asked.
    cache.mkdir(parents=True)
    (cache / bb.IMAGENET_NOTOP_FILE).write_bytes(b"weights")
    asked.clear()
    assert bb.imagenet_weights_file() == str(cache / bb.IMAGENET_NOTOP_FILE) and asked == []
