"""trainer.export: round trips give identical outputs, the geolocator equals backbone + heads, mismatches refused."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from trainer import export, inputs
from trainer.backbone import FEATURE_DIM, IMAGE_SIZE, build_backbone, weights_checksum
from trainer.model import build_model

CHECKSUM = "c" * 64


def _trained_heads(embedding_dim: int, n_classes: dict, seed: int = 0) -> keras.Model:
    """Heads moved away from their initial weights by a few RMSprop steps on random labels."""
    rng = np.random.default_rng(seed)
    model = build_model(embedding_dim, n_classes, seed=seed)
    x = rng.normal(size=(128, embedding_dim)).astype(np.float32)
    model.fit(
        x, {n: rng.integers(0, k, 128) for n, k in n_classes.items()}, batch_size=32, epochs=1, verbose=0
    )
    return model


def test_features_model_round_trip_gives_identical_outputs(tmp_path):
    n_classes = {"set1": 6, "set2": 4, "planet": 9}
    sets = str(tmp_path / "sets")
    inputs.write_sets_json(sets, n_classes, CHECKSUM)
    model = _trained_heads(10, n_classes)
    manifest = export.export_model(model, str(tmp_path / "model"), sets, with_geolocator=False)

    on_disk = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert on_disk == manifest
    assert (on_disk["embedding_dim"], on_disk["set_names"], on_disk["n_classes"], on_disk["sets_checksum"]) == (
        10, list(n_classes), n_classes, CHECKSUM,
    )  # fmt: skip
    assert on_disk["model_id"] == export.model_id_for(model, CHECKSUM)
    assert os.path.exists(tmp_path / "model" / "_SUCCESS")

    loaded = export.load_features_model(str(tmp_path / "model"), sets)
    assert getattr(loaded, "optimizer", None) is None  # a serving file, not a training checkpoint
    x = np.random.default_rng(1).normal(size=(33, 10)).astype(np.float32)
    want, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    assert set(got) == set(n_classes)
    for name in n_classes:
        np.testing.assert_array_equal(got[name], want[name])
    # Bound through sets.json directly, or through a manifest-like mapping, works the same way.
    export.load_features_model(str(tmp_path / "model"), os.path.join(sets, "sets.json"))
    export.load_features_model(str(tmp_path / "model"), on_disk)


def test_mismatched_sets_are_refused_naming_both_sides(tmp_path):
    n_classes = {"set1": 6, "set2": 4}
    sets = str(tmp_path / "sets")
    inputs.write_sets_json(sets, n_classes, CHECKSUM)
    model_dir = str(tmp_path / "model")
    export.export_model(_trained_heads(8, n_classes), model_dir, sets, with_geolocator=False)

    other_checksum = str(tmp_path / "other")
    inputs.write_sets_json(other_checksum, n_classes, "d" * 64)
    with pytest.raises(inputs.BindingError) as error:
        export.load_features_model(model_dir, other_checksum)
    message = str(error.value)
    assert "manifest.json" in message and os.path.join(other_checksum, "sets.json") in message
    assert f"checksum {CHECKSUM} != {'d' * 64}" in message

    other_sizes = str(tmp_path / "sizes")
    inputs.write_sets_json(other_sizes, {"set1": 6, "set2": 5}, CHECKSUM)
    with pytest.raises(inputs.BindingError, match="'set2' has 4 classes, not 5"):
        export.load_features_model(model_dir, other_sizes)
    missing = str(tmp_path / "missing")
    inputs.write_sets_json(missing, {"set1": 6}, CHECKSUM)
    with pytest.raises(inputs.BindingError, match="set 'set2' is missing"):
        export.load_geolocator(model_dir, missing)
    # Exporting heads that do not fit the sets is refused before anything is written.
    with pytest.raises(inputs.BindingError, match="'set2' has 4 classes, not 5"):
        export.export_model(
            _trained_heads(8, n_classes), str(tmp_path / "never"), other_sizes, with_geolocator=False
        )
    assert not os.path.exists(tmp_path / "never")
    # A manifest that lies about its model file is caught too.
    manifest_path = os.path.join(model_dir, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    manifest["n_classes"]["set1"] = 7
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)
    inputs.write_sets_json(str(tmp_path / "seven"), {"set1": 7, "set2": 4}, CHECKSUM)
    # Edited after the export: the marker's checksum catches it first.
    from schemas.artifacts import ArtifactChecksumError, write_marker

    with pytest.raises(ArtifactChecksumError, match="manifest.json changed"):
        export.load_features_model(model_dir, str(tmp_path / "seven"))
    write_marker(model_dir)  # a manifest that lied from the start (its marker agrees with it)
    with pytest.raises(inputs.BindingError, match="does not match its manifest"):
        export.load_features_model(model_dir, str(tmp_path / "seven"))


def test_geolocator_equals_backbone_features_through_the_features_model(tmp_path):
    """One Inception v3 with random weights, saved as a weights file, plays the role of the real backbone."""
    keras.utils.set_random_seed(11)
    base = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), pooling="avg"
    )
    weights = str(tmp_path / "inception_v3_notop.weights.h5")
    base.save_weights(weights)
    del base

    # Three very different images: black, white, noise.
    rng = np.random.default_rng(2)
    images = np.stack(
        [np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3)), np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255.0),
         rng.uniform(0, 255, size=(IMAGE_SIZE, IMAGE_SIZE, 3))]
    ).astype(np.float32)  # fmt: skip
    # The reference features come from an independently built backbone loading the same weights file.
    reference = build_backbone(weights)  # built once: its features and its checksum are the references below
    features = reference.predict(images, verbose=0)
    assert np.abs(features - features.mean(axis=0)).max() > 0

    n_classes = {"set1": 5, "planet": 7}
    sets = str(tmp_path / "sets")
    inputs.write_sets_json(sets, n_classes, CHECKSUM)
    heads = _trained_heads(FEATURE_DIM, n_classes)
    # Random-weight Inception features are tiny and alike; scale the kernels so the images' logits differ
    # by a few units and the comparison below cannot pass on near-constant outputs.
    spread = np.linalg.norm(features - features.mean(axis=0), axis=1).max()
    for name in n_classes:
        kernel, bias = heads.get_layer(name).get_weights()
        heads.get_layer(name).set_weights(
            [rng.normal(size=kernel.shape).astype(np.float32) * 3 / spread, bias]
        )
    model_dir = str(tmp_path / "model")
    manifest = export.export_model(heads, model_dir, sets, backbone_weights=weights)
    # The manifest names the backbone, the weights file and the checksum of the weights the geolocator holds.
    assert manifest["backbone"]["backbone"] == "inception_v3"
    assert manifest["backbone"]["weights"] == os.path.basename(weights)
    assert manifest["backbone"]["feature_dim"] == FEATURE_DIM
    assert manifest["backbone"]["weights_sha256"] == weights_checksum(reference)
    assert export.check_backbone(manifest, model_dir, allow_random=False) is None

    geolocator = export.load_geolocator(model_dir, sets)
    features_model = export.load_features_model(model_dir, sets)
    want = features_model.predict(features, verbose=0)
    got = geolocator.predict(images, verbose=0)
    for name, k in n_classes.items():
        assert got[name].shape == (3, k)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[name].sum(axis=1), 1.0, rtol=1e-5)
        # The images get clearly different distributions, so the equality above is not between constants.
        assert np.abs(got[name][0] - got[name][1]).max() > 0.05


def test_export_cli_exports_each_heads_best_epoch_of_a_job_dir_and_checks_its_sets(tmp_path):
    from trainer import hparams as hp
    from trainer.train import train

    n_classes = {"set1": 4, "set2": 3}
    rng = np.random.default_rng(5)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    labels = {name: rng.integers(0, k, size=96) for name, k in n_classes.items()}
    examples, sets, job = (str(tmp_path / name) for name in ("examples", "sets", "job"))
    inputs.write_examples_from_arrays(
        examples, {"train": (x, labels), "eval": (x[:32], labels)}, n_classes, CHECKSUM
    )
    inputs.write_sets_json(sets, n_classes, CHECKSUM)
    # Every head at its best eval epoch (trainer.train keeps checkpoints/best.keras) is what gets exported.
    trained = train(examples, sets, job, hp.HParams(epochs=2, batch_size=32, verbose=0)).best_model

    manifest = export.run(
        ["--job_dir", job, "--sets", sets, "--export_dir", str(tmp_path / "model"), "--no_geolocator"]
    )
    assert manifest["sets_checksum"] == CHECKSUM
    assert not os.path.exists(tmp_path / "model" / export.GEOLOCATOR_FILE)
    loaded = export.load_features_model(str(tmp_path / "model"), sets)
    want, got = trained.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for name in n_classes:
        np.testing.assert_array_equal(got[name], want[name])
    # The job was trained on sets with CHECKSUM; exporting it against other sets of the same shape is refused.
    other = str(tmp_path / "other_sets")
    inputs.write_sets_json(other, n_classes, "e" * 64)
    with pytest.raises(inputs.BindingError, match="the trained model was not built from the geoclass sets"):
        export.run(
            ["--job_dir", job, "--sets", other, "--export_dir", str(tmp_path / "m2"), "--no_geolocator"]
        )


def test_a_geolocator_needs_chosen_weights_and_random_ones_are_refused_downstream(tmp_path, backbone_path):
    n_classes = {"set1": 3}
    sets = str(tmp_path / "sets")
    inputs.write_sets_json(sets, n_classes, CHECKSUM)
    heads = _trained_heads(FEATURE_DIM, n_classes)
    with pytest.raises(ValueError, match="no backbone weights chosen"):
        export.export_model(heads, str(tmp_path / "none"), sets)
    assert not os.path.exists(tmp_path / "none")

    # A .keras backbone (the session's random Inception saved as a file) carries its own weights.
    manifest = export.export_model(heads, str(tmp_path / "file"), sets, backbone=str(backbone_path))
    assert manifest["backbone"]["backbone"] == os.path.basename(backbone_path)
    assert manifest["backbone"]["weights"] == os.path.basename(backbone_path)
    assert export.check_backbone(manifest, "m", allow_random=False) is None
    # Features model only, no backbone named: the features' origin is not recorded, nothing to refuse.
    manifest = export.export_model(heads, str(tmp_path / "heads"), sets, with_geolocator=False)
    assert manifest["backbone"] is None and export.check_backbone(manifest, "m", allow_random=False) is None

    manifest = export.export_model(heads, str(tmp_path / "random"), sets, backbone=str(backbone_path),
                                   backbone_weights="random")
    assert manifest["backbone"]["weights"] == "random"
    with pytest.raises(export.RandomBackboneError, match="random weights") as refused:
        export.check_backbone(manifest, str(tmp_path / "random"), allow_random=False)
    assert "\n" not in str(refused.value) and "--allow_random_backbone" in str(refused.value)
    warning = export.check_backbone(manifest, str(tmp_path / "random"), allow_random=True)
    assert warning.startswith("WARNING:") and "\n" not in warning
    # A manifest from before backbones were recorded, with a geolocator on no weights file: random too.
    assert export.has_random_backbone({"backbone_weights": None})
    assert not export.has_random_backbone({"backbone_weights": "inception_v3_notop.weights.h5"})
