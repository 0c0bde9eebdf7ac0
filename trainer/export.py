"""Export the trained heads as the model artifact, and load it back only against the right geoclass sets.

The model artifact (docs/ARTIFACTS.md) is a directory with
- ``features_model.keras``: ``embedding [B, D] -> {set_name: softmax [B, K]}`` (the heads),
- ``geolocator.keras``: ``image [B, 299, 299, 3] (0..255 RGB, as ``imagery.load_image`` gives; no resize
  inside) -> {set_name: softmax [B, K]}``, the frozen backbone (``trainer.backbone.load_backbone``: Inception
  v3 by default, or any ``.keras`` image encoder) followed by copies of the same heads,
- ``manifest.json``: ``model_id, embedding_dim, set_names, n_classes, sets_checksum`` binding the model to
  the geoclass-sets artifact it was trained for, and ``backbone``: the backbone the heads' features come
  from (``backbone``, ``weights``: a file name, ``imagenet`` or ``random``; ``weights_sha256``,
  ``feature_dim``), or null for features of unrecorded origin.

Loaders compare the manifest with that artifact's ``sets.json`` and with the model file itself, and refuse a
mismatch with a message naming both sides: a model whose class ids mean other classes would otherwise
predict wrong places without any error. Models load in Keras safe mode.

Backbones are chosen, never silently random: a geolocator needs ``--backbone_weights`` (a file, ``imagenet``
or ``random``), and ``batch_predict``/``locate`` refuse a model whose backbone weights are ``random`` unless
told ``--allow_random_backbone`` (``check_backbone``).

Run locally (from a finished or running job dir; each head's best epoch, else the newest checkpoint, is exported)::

    python -m trainer.export --job_dir out/job --sets out/geoclass_sets --export_dir out/model \\
        --backbone_weights inception_v3_notop.weights.h5 [--backbone inception_v3|PATH.keras] [--no_geolocator]
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

from schemas import artifacts
from schemas.artifacts import commit_staged, local_staging
from trainer import inputs
from trainer.job_dir import latest_checkpoint
from trainer.model import head_sizes

log = logging.getLogger("trainer.export")

FEATURES_MODEL_FILE = "features_model.keras"
GEOLOCATOR_FILE = "geolocator.keras"
MANIFEST_FILE = artifacts.MODEL_MANIFEST
MANIFEST_FORMAT = 1
DEFAULT_BACKBONE = "inception_v3"
RANDOM_WEIGHTS = "random"


class RandomBackboneError(ValueError):
    """A model whose backbone has random weights was given to a job that predicts places with it."""


def features_model_from(trained: keras.Model) -> keras.Model:
    """The trained graph without its optimizer: exported files carry weights, not training state."""
    return keras.Model(trained.input, trained.output, name="cplanet_features_model")


def load_chosen_backbone(backbone: str = DEFAULT_BACKBONE, weights: str | None = None) -> tuple[keras.Model, dict]:
    """``trainer.backbone.load_backbone`` for a user's choice; Inception v3's ``weights`` must be named
    (``random`` included); a ``.keras`` backbone carries its own unless a weights file is given.

    Returns the frozen backbone (images -> features) and its record for the manifest.
    """
    from trainer.backbone import load_backbone

    if weights is None and backbone == DEFAULT_BACKBONE:
        raise ValueError(
            f"no backbone weights chosen for the {backbone} backbone: give --backbone_weights FILE, 'imagenet', "
            f"or '{RANDOM_WEIGHTS}' (tests only), or export without a geolocator (--no_geolocator)"
        )
    model, info = load_backbone(backbone, weights)
    return model, dict(info)


def build_geolocator(
    features_model: keras.Model, backbone: str = DEFAULT_BACKBONE, backbone_weights: str | None = None
) -> tuple[keras.Model, dict]:
    """Images -> per-set probabilities: the frozen backbone, then heads holding copies of the trained weights.

    The input is what ``imagery.load_image`` returns (299x299 float RGB in 0..255): no resize inside the model,
    so extract_features, this geolocator and locate share one preprocessing. Returns (model, backbone record).
    """
    sizes = head_sizes(features_model)
    embedding_dim = int(features_model.input.shape[-1])
    extractor, info = load_chosen_backbone(backbone, backbone_weights)
    feature_dim = int(extractor.output.shape[-1])
    if embedding_dim != feature_dim:
        raise ValueError(
            f"the heads take {embedding_dim}-d features, but the {info['backbone']} backbone gives {feature_dim}-d ones"
        )
    features = extractor.output
    outputs = {}
    for name, count in sizes.items():
        trained = features_model.get_layer(name)
        head = keras.layers.Dense(count, activation="softmax", name=name)
        outputs[name] = head(features)
        head.set_weights(trained.get_weights())
    return keras.Model(extractor.input, outputs, name="cplanet_geolocator"), info


def recorded_backbone(manifest: Mapping) -> dict | None:
    """The manifest's backbone record; manifests written before it existed say only ``backbone_weights``."""
    if manifest.get("backbone") is not None:
        return dict(manifest["backbone"])
    if "backbone_weights" in manifest:
        return {"backbone": DEFAULT_BACKBONE, "weights": manifest["backbone_weights"] or RANDOM_WEIGHTS}
    return None


def has_random_backbone(manifest: Mapping) -> bool:
    record = recorded_backbone(manifest)
    return record is not None and record.get("weights") == RANDOM_WEIGHTS


def check_backbone(manifest: Mapping, model_dir: str, allow_random: bool) -> str | None:
    """Refuse a model with a random-weight backbone (one-line ``RandomBackboneError``) unless ``allow_random``.

    Returns the one-line warning to print on every run when a random backbone is allowed, else None.
    """
    if not has_random_backbone(manifest):
        return None
    name = recorded_backbone(manifest).get("backbone", DEFAULT_BACKBONE)
    if not allow_random:
        raise RandomBackboneError(
            f"model {model_dir}: its {name} backbone has random weights, so its places mean nothing; export it "
            "with --backbone_weights FILE or imagenet (see README), or pass --allow_random_backbone (tests only)"
        )
    return f"WARNING: model {model_dir}: its {name} backbone has random weights (--allow_random_backbone): its places mean nothing"


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
    backbone: str = DEFAULT_BACKBONE,
    backbone_record: Mapping | None = None,
) -> dict:
    """Write the model artifact for ``model`` (trained heads) bound to the geoclass sets ``sets``.

    ``backbone``/``backbone_weights``: the backbone the heads' features come from (``trainer.backbone``), built
    into the geolocator and recorded in the manifest. Without ``backbone_weights`` there is no geolocator
    (``with_geolocator`` must be False) and the manifest records no backbone (features of unrecorded origin).
    ``backbone_record``: when ``backbone`` is a saved copy of a backbone (``run_all`` builds it once for the
    features and the geolocator), the record of what it is (``load_backbone``'s info, e.g. inception_v3 with
    random weights); refused unless its ``weights_sha256`` is that of the saved copy.

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
    geolocator = None
    if with_geolocator:
        geolocator, manifest["backbone"] = build_geolocator(features_model, backbone, backbone_weights)
    elif backbone_weights is not None or backbone != DEFAULT_BACKBONE:
        _, manifest["backbone"] = load_chosen_backbone(backbone, backbone_weights)
    else:
        manifest["backbone"] = None
    if backbone_record is not None:
        if manifest["backbone"] is None or backbone_record.get("weights_sha256") != manifest["backbone"]["weights_sha256"]:
            raise ValueError(
                f"the backbone record names weights {backbone_record.get('weights_sha256')}, but {backbone} holds "
                f"{None if manifest['backbone'] is None else manifest['backbone']['weights_sha256']}"
            )
        manifest["backbone"] = dict(backbone_record)
    if manifest["backbone"] is not None:
        record = manifest["backbone"]
        for key in ("backbone", "weights"):  # file names, not this machine's paths; the checksum identifies them
            if record.get(key) and os.sep in str(record[key]):
                record[key] = os.path.basename(record[key])
        if int(record.get("feature_dim", manifest["embedding_dim"])) != manifest["embedding_dim"]:
            raise ValueError(
                f"the heads take {manifest['embedding_dim']}-d features, but the {record['backbone']} backbone "
                f"gives {record['feature_dim']}-d ones"
            )
        if has_random_backbone(manifest):
            log.warning("exporting a model whose %s backbone has random weights: for tests only", record["backbone"])

    # Files go to a local staging directory (a sibling, or a temporary directory for gs://: TensorFlow's own
    # gs:// client is not used), then are published with the checksummed _SUCCESS marker last.
    staging = local_staging(export_dir)
    try:
        features_model.save(os.path.join(staging, FEATURES_MODEL_FILE))
        if geolocator is not None:
            geolocator.save(os.path.join(staging, GEOLOCATOR_FILE))
        with open(os.path.join(staging, MANIFEST_FILE), "w") as handle:
            handle.write(json.dumps(manifest, indent=2) + "\n")
        commit_staged(staging, export_dir, {"model_id": manifest["model_id"]})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported model %s for sets %s to %s", manifest["model_id"], manifest["set_names"], export_dir)
    return manifest


def read_manifest(model_dir: str) -> dict:
    """The model's manifest (``schemas.artifacts.read_model_manifest``: complete, unchanged, every key)."""
    return artifacts.read_model_manifest(model_dir)


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
    path = artifacts.join(model_dir, file_name)
    if not artifacts.exists(path):
        raise FileNotFoundError(f"{model_dir} has no {file_name}")
    model = keras.saving.load_model(_local_copy(path), compile=False, safe_mode=True)
    sizes = head_sizes(model)
    expected = {name: int(manifest["n_classes"][name]) for name in manifest["set_names"]}
    got_dim = int(model.input.shape[-1])
    if sizes != expected or (input_dim is not None and got_dim != input_dim):
        raise inputs.BindingError(
            f"{path} does not match its manifest {os.path.join(model_dir, MANIFEST_FILE)}: the file has heads "
            f"{sizes} on {got_dim}-d input, the manifest says {expected} on {input_dim}-d input"
        )
    return model


def _local_copy(path: str) -> str:
    """Keras loads local files; a gs:// model file is copied through Beam's FileSystems (TensorFlow's own gs://
    client would ignore STORAGE_EMULATOR_HOST and custom endpoints)."""
    if not artifacts.is_remote(path):
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="cplanet-model-"), os.path.basename(path))
    artifacts.copy_file(path, local)
    return local


def load_features_model(model_dir: str, sets: str | Mapping) -> keras.Model:
    """``features_model.keras``, after checking it was trained for the geoclass sets ``sets``.

    ``sets``: the geoclass-sets directory, its ``sets.json``, or a mapping (a parsed ``sets.json`` or a
    manifest with ``sets_checksum``/``set_names``/``n_classes``, e.g. from a partitions artifact).
    """
    return _load_checked(model_dir, FEATURES_MODEL_FILE, sets, int(read_manifest(model_dir)["embedding_dim"]))


def load_geolocator(model_dir: str, sets: str | Mapping) -> keras.Model:
    """``geolocator.keras`` (images -> per-set probabilities), with the same checks as the features model."""
    return _load_checked(model_dir, GEOLOCATOR_FILE, sets, None)


def run(argv: Sequence[str] | None = None) -> dict:
    from schemas.cli import Parser

    parser = Parser(prog="trainer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--job_dir", required=True, help="a trainer job dir; its newest checkpoint is exported"
    )
    parser.add_argument("--sets", required=True, help="geoclass-sets artifact dir (or its sets.json)")
    parser.add_argument("--export_dir", required=True)
    add_backbone_flags(parser)
    parser.add_argument(
        "--backbone_record", default=None, metavar="FILE.json",
        help="what a saved --backbone PATH.keras is (load_backbone's info, e.g. run_all's backbone/backbone.json)",
    )  # fmt: skip
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
        backbone=args.backbone,
        backbone_record=_read_json(args.backbone_record) if args.backbone_record else None,
    )


def _read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path, "r") as handle:
        return json.loads(handle.read())


def add_backbone_flags(parser: argparse.ArgumentParser) -> None:
    """``--backbone`` and ``--backbone_weights``, the same in every command that builds or records one."""
    parser.add_argument(
        "--backbone", default=DEFAULT_BACKBONE,
        help="inception_v3 (the paper's) or a .keras model mapping 299x299 images (0..255) to a feature vector",
    )  # fmt: skip
    parser.add_argument(
        "--backbone_weights", default=None,
        help="weights of the backbone: a local file (e.g. InceptionV3(include_top=False).save_weights), 'imagenet' "
        "(downloads where a network exists) or 'random' (tests only; predictions refuse it by default)",
    )  # fmt: skip


if __name__ == "__main__":
    from schemas.cli import main

    main("trainer.export")
