"""Export the trained heads as the model artifact, and load it back only against the right geoclass sets.

The model artifact (docs/ARTIFACTS.md) is a directory with
- ``features_model.keras``: ``embedding [B, D] -> {set_name: softmax [B, K]}`` (the heads),
- ``geolocator.keras``: ``image [B, 299, 299, 3] (0..255 RGB) -> {set_name: softmax [B, K]}``, the frozen
  Inception v3 backbone (``trainer.backbone``) followed by copies of the same heads,
- ``manifest.json``: ``model_id, embedding_dim, set_names, n_classes, sets_checksum`` binding the model to
  the geoclass-sets artifact it was trained for.

Loaders compare the manifest with that artifact's ``sets.json`` and with the model file itself, and refuse a
mismatch with a message naming both sides: a model whose class ids mean other classes would otherwise
predict wrong places without any error. Models load in Keras safe mode.

Run locally (from a finished or running job dir; each head's best epoch, else the newest checkpoint, is exported)::

    python -m trainer.export --job_dir out/job --sets out/geoclass_sets --export_dir out/model \\
        [--backbone_weights inception_v3_notop.weights.h5] [--no_geolocator]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from schemas.io import SUCCESS_MARKER, replace_directory_atomic, staging_path
from trainer import inputs
from trainer.backbone import FEATURE_DIM, build_backbone
from trainer.model import head_sizes

log = logging.getLogger("trainer.export")

FEATURES_MODEL_FILE = "features_model.keras"
GEOLOCATOR_FILE = "geolocator.keras"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


def features_model_from(trained: keras.Model) -> keras.Model:
    """The trained graph without its optimizer: exported files carry weights, not training state."""
    return keras.Model(trained.input, trained.output, name="cplanet_features_model")


def build_geolocator(features_model: keras.Model, backbone_weights: str | None = None) -> keras.Model:
    """Images -> per-set probabilities: the frozen backbone, then heads holding copies of the trained weights."""
    sizes = head_sizes(features_model)
    embedding_dim = int(features_model.input.shape[-1])
    if embedding_dim != FEATURE_DIM:
        raise ValueError(
            f"the heads take {embedding_dim}-d features, but the Inception v3 backbone gives {FEATURE_DIM}-d ones"
        )
    backbone = build_backbone(backbone_weights)
    features = backbone.output
    outputs = {}
    for name, count in sizes.items():
        trained = features_model.get_layer(name)
        head = keras.layers.Dense(count, activation="softmax", name=name)
        outputs[name] = head(features)
        head.set_weights(trained.get_weights())
    return keras.Model(backbone.input, outputs, name="cplanet_geolocator")


def model_id_for(features_model: keras.Model, sets_checksum: str) -> str:
    """A content id: the same heads for the same sets always get the same id."""
    digest = hashlib.sha256(sets_checksum.encode())
    for name in sorted(head_sizes(features_model)):
        for weights in features_model.get_layer(name).get_weights():
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(weights, dtype=np.float32).tobytes())
    return "cplanet-" + digest.hexdigest()[:16]


def manifest_for(
    features_model: keras.Model, binding: inputs.SetsBinding, model_id: str | None = None
) -> dict:
    sizes = head_sizes(features_model)
    return {
        "format": MANIFEST_FORMAT,
        "model_id": model_id or model_id_for(features_model, binding.checksum),
        "embedding_dim": int(features_model.input.shape[-1]),
        "set_names": list(sizes),
        "n_classes": sizes,
        "sets_checksum": binding.checksum,
    }


def export_model(
    model: keras.Model,
    export_dir: str,
    sets: str | Mapping,
    backbone_weights: str | None = None,
    model_id: str | None = None,
    with_geolocator: bool = True,
    trained_checksum: str | None = None,
) -> dict:
    """Write the model artifact for ``model`` (trained heads) bound to the geoclass sets ``sets``.

    Refuses heads that do not match the sets, and, given ``trained_checksum`` (the sets checksum of the
    examples the model was trained on), a model trained on other sets. The directory appears complete or not at all: files are
    written to a staging directory that is renamed into place (local), or copied with the manifest last
    (``gs://``). Returns the manifest.
    """
    features_model = features_model_from(model)
    sizes = head_sizes(features_model)
    artifact = inputs.read_sets_binding(sets)
    model_side = inputs.SetsBinding(
        set_names=tuple(sizes),
        n_classes=sizes,
        checksum=trained_checksum or artifact.checksum,
        source="the trained model",
    )
    inputs.check_binding(model_side, artifact)
    manifest = manifest_for(features_model, artifact.restricted_to(list(sizes)), model_id)
    manifest["backbone_weights"] = os.path.basename(backbone_weights) if backbone_weights else None
    if with_geolocator and backbone_weights is None:
        log.warning(
            "exporting a geolocator with a randomly initialised backbone (no --backbone_weights given)"
        )

    remote = "://" in export_dir
    staging = tempfile.mkdtemp(prefix="cplanet-export-") if remote else staging_path(export_dir)
    try:
        features_model.save(os.path.join(staging, FEATURES_MODEL_FILE))
        if with_geolocator:
            build_geolocator(features_model, backbone_weights).save(os.path.join(staging, GEOLOCATOR_FILE))
        with open(os.path.join(staging, MANIFEST_FILE), "w") as handle:
            handle.write(json.dumps(manifest, indent=2) + "\n")
        if remote:
            tf.io.gfile.makedirs(export_dir)
            files = sorted(os.listdir(staging), key=lambda name: name == MANIFEST_FILE)
            for name in files + [SUCCESS_MARKER]:
                source = os.path.join(staging, name)
                if name == SUCCESS_MARKER:
                    open(source, "w").close()
                tf.io.gfile.copy(source, os.path.join(export_dir, name), overwrite=True)
        else:
            replace_directory_atomic(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported model %s for sets %s to %s", manifest["model_id"], manifest["set_names"], export_dir)
    return manifest


def read_manifest(model_dir: str) -> dict:
    path = os.path.join(model_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{model_dir} is not a model artifact: it has no {MANIFEST_FILE}")
    with tf.io.gfile.GFile(path, "r") as handle:
        manifest = json.loads(handle.read())
    missing = [
        k
        for k in ("model_id", "embedding_dim", "set_names", "n_classes", "sets_checksum")
        if k not in manifest
    ]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return manifest


def _manifest_binding(model_dir: str, manifest: Mapping) -> inputs.SetsBinding:
    names = tuple(manifest["set_names"])
    return inputs.SetsBinding(
        set_names=names,
        n_classes={name: int(manifest["n_classes"][name]) for name in names},
        checksum=str(manifest["sets_checksum"]),
        source=f"model {manifest['model_id']} ({os.path.join(model_dir, MANIFEST_FILE)})",
    )


def _load_checked(model_dir: str, file_name: str, sets: str | Mapping, input_dim: int | None) -> keras.Model:
    manifest = read_manifest(model_dir)
    inputs.check_binding(_manifest_binding(model_dir, manifest), inputs.read_sets_binding(sets))
    path = os.path.join(model_dir, file_name)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{model_dir} has no {file_name}")
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    sizes = head_sizes(model)
    expected = {name: int(manifest["n_classes"][name]) for name in manifest["set_names"]}
    got_dim = int(model.input.shape[-1])
    if sizes != expected or (input_dim is not None and got_dim != input_dim):
        raise inputs.BindingError(
            f"{path} does not match its manifest {os.path.join(model_dir, MANIFEST_FILE)}: the file has heads "
            f"{sizes} on {got_dim}-d input, the manifest says {expected} on {input_dim}-d input"
        )
    return model


def load_features_model(model_dir: str, sets: str | Mapping) -> keras.Model:
    """``features_model.keras``, after checking it was trained for the geoclass sets ``sets``.

    ``sets``: the geoclass-sets directory, its ``sets.json``, or a mapping (a parsed ``sets.json`` or a
    manifest with ``sets_checksum``/``set_names``/``n_classes``, e.g. from a partitions artifact).
    """
    return _load_checked(model_dir, FEATURES_MODEL_FILE, sets, int(read_manifest(model_dir)["embedding_dim"]))


def load_geolocator(model_dir: str, sets: str | Mapping) -> keras.Model:
    """``geolocator.keras`` (images -> per-set probabilities), with the same checks as the features model."""
    return _load_checked(model_dir, GEOLOCATOR_FILE, sets, None)


def latest_checkpoint(job_dir: str) -> tuple[str, str]:
    """(checkpoint to export, sets checksum it was trained on) of a trainer job dir: every head at its best
    eval epoch when the run kept one (``trainer.train``), else the newest checkpoint."""
    from trainer.train import STATE_FILE
    from trainer.train import export_checkpoint_of as checkpoint_of

    path = os.path.join(job_dir, STATE_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{job_dir} has no {STATE_FILE}: no epoch of training has finished there")
    with tf.io.gfile.GFile(path, "r") as handle:
        state = json.loads(handle.read())
    return checkpoint_of(job_dir, state), state["sets_checksum"]


def run(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--job_dir", required=True, help="a trainer job dir; its newest checkpoint is exported"
    )
    parser.add_argument("--sets", required=True, help="geoclass-sets artifact dir (or its sets.json)")
    parser.add_argument("--export_dir", required=True)
    parser.add_argument(
        "--backbone_weights", default=None, help="InceptionV3(include_top=False) weights file"
    )
    parser.add_argument("--model_id", default=None, help="default: a hash of the heads and the sets checksum")
    parser.add_argument("--no_geolocator", action="store_true", help="export the features model only")
    args = parser.parse_args(argv)
    checkpoint, trained_checksum = latest_checkpoint(args.job_dir)
    log.info("exporting %s", checkpoint)
    model = keras.saving.load_model(checkpoint, compile=False, safe_mode=True)
    return export_model(
        model,
        args.export_dir,
        args.sets,
        args.backbone_weights,
        args.model_id,
        with_geolocator=not args.no_geolocator,
        trained_checksum=trained_checksum,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run()
