"""The frozen image backbone: 299x299 RGB images (float32, 0..255) -> one feature vector per image.

Shared by the feature-extraction job (``pipelines.extract_features`` runs it through RunInference), the
exported geolocator (backbone + heads) and ``pipelines.locate``. Images come from ``imagery.load_image``
(EXIF orientation, any mode to RGB, one Pillow resize), so the backbone never resizes.

``load_backbone(backbone, weights) -> (model, info)`` is the one way to get a backbone:

- ``backbone="inception_v3"`` (the paper's, the default): Keras' Inception v3 without its top, average-pooled
  (2048-d), with Inception's preprocessing (``x / 127.5 - 1``) as a ``Rescaling`` layer inside the model so a
  saved ``.keras`` file is self-contained and loads in safe mode. ``weights``:
    * a local file (``.h5`` / ``.weights.h5`` of ``keras.applications.InceptionV3(include_top=False)``, e.g.
      Keras' own ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``),
    * ``"imagenet"``: that file from the Keras cache (``$KERAS_HOME/models`` or ``~/.keras/models``), or
      downloaded there when the network is reachable; without either it fails at once with one line
      (:class:`BackboneError`) saying how to bring the file onto the machine,
    * ``"random"`` (tests only: the features mean nothing, and ``locate``/``batch_predict`` refuse such models).
- ``backbone="PATH.keras"``: any saved Keras model mapping ``[B, 299, 299, 3]`` 0..255 images to ``[B, D]``
  (e.g. a CLIP image encoder exported from KerasHub with its preprocessing inside). ``weights``: ``None`` (the
  weights saved in the file), a local weights file for it, or ``"random"`` (re-initialised clone).

``info`` is what a model manifest records: ``backbone`` (``"inception_v3"`` or the ``.keras`` path),
``weights`` (``"random"``, ``"imagenet"`` or the path the weights came from), ``weights_sha256`` (sha256 over
the model's weight arrays in order, so the same weights give the same checksum whatever file held them) and
``feature_dim``.

``weights=None`` with ``inception_v3`` is the same as ``"random"``: callers that must not run random backbones
ask for ``--backbone_weights`` explicitly (``extract_features`` refuses to start without it).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import keras
import numpy as np

IMAGE_SIZE = 299
FEATURE_DIM = 2048
IMAGE_INPUT_NAME = "image"
INCEPTION_V3 = "inception_v3"
RANDOM = "random"
IMAGENET = "imagenet"

# Keras' own file name and host for the ImageNet weights of InceptionV3(include_top=False).
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
_IMAGENET_HOST = "storage.googleapis.com"
_REACH_TIMEOUT_S = 3.0


class BackboneError(ValueError):
    """A backbone or its weights cannot be had; the message is one line saying what to do."""


def build_backbone(weights: str | None = None, name: str = "inception_v3_backbone") -> keras.Model:
    """Inception v3: images float32 [batch, 299, 299, 3] in 0..255 -> features [batch, 2048]; frozen.

    ``weights``: ``None``/``"random"``, ``"imagenet"`` (must be cached or reachable, see :func:`load_backbone`)
    or a local weights file of ``InceptionV3(include_top=False)``.
    """
    images = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name=IMAGE_INPUT_NAME)
    scaled = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="inception_preprocess")(images)
    if weights == IMAGENET:
        weights = imagenet_weights_file()
    base = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), pooling="avg"
    )
    if weights not in (None, RANDOM):
        if not os.path.isfile(weights):
            raise BackboneError(f"--backbone_weights {weights}: no such file (give a file, 'imagenet' or 'random')")
        try:
            base.load_weights(weights)
        except Exception as error:  # h5py/Keras raise several types for a file of the wrong model
            raise BackboneError(
                f"--backbone_weights {weights}: not weights of InceptionV3(include_top=False): "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            ) from error
    base.trainable = False
    features = base(scaled, training=False)
    return keras.Model(images, features, name=name)


def _keras_cache_dirs() -> list[str]:
    # Where keras.utils.get_file puts "models/...": $KERAS_HOME or ~/.keras, or /tmp/.keras if that is read-only.
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [os.path.join(home, "models"), os.path.join("/tmp", ".keras", "models")]


def _reachable(host: str, port: int = 443, timeout: float = _REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` (name lookup included, in a thread,
    because ``getaddrinfo`` ignores socket timeouts and can hang for tens of seconds offline)."""
    result: list[bool] = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def imagenet_weights_file() -> str:
    """The local path of Keras' Inception v3 ImageNet (no top) weights, downloading them only if reachable."""
    for directory in _keras_cache_dirs():
        path = os.path.join(directory, IMAGENET_NOTOP_FILE)
        if os.path.isfile(path):
            return path
    hint = (
        f"put {IMAGENET_NOTOP_FILE} (from a machine with network: python -c \"import keras; "
        f"keras.applications.InceptionV3(include_top=False)\", then copy ~/.keras/models/{IMAGENET_NOTOP_FILE}) "
        f"into {_keras_cache_dirs()[0]} or pass --backbone_weights PATH"
    )
    if not _reachable(_IMAGENET_HOST):
        raise BackboneError(f"--backbone_weights imagenet: not in the Keras cache and {_IMAGENET_HOST} is unreachable; {hint}")
    try:
        return keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + IMAGENET_NOTOP_FILE,
            cache_subdir="models",
            file_hash="bcbd6486424b2319ff4ef7d526e38f63",
        )
    except Exception as error:
        raise BackboneError(f"--backbone_weights imagenet: download failed ({type(error).__name__}); {hint}") from error


def weights_checksum(model: keras.Model) -> str:
    """sha256 over the model's weight arrays (float32 bytes, in ``model.weights`` order) and their shapes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight), dtype=np.float32)
        digest.update(str(values.shape).encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def _load_keras_backbone(path: str, weights: str | None) -> tuple[keras.Model, str]:
    if not os.path.isfile(path):
        raise BackboneError(f"--backbone {path}: no such file (give 'inception_v3' or a .keras model file)")
    if weights == IMAGENET:
        raise BackboneError(f"--backbone_weights imagenet is for --backbone {INCEPTION_V3}; {path} carries its own weights")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise BackboneError(f"--backbone {path}: cannot load the model: {type(error).__name__}: {error}") from error
    inputs = model.inputs
    if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        shapes = ", ".join(str(tuple(i.shape)) for i in inputs)
        raise BackboneError(f"--backbone {path}: takes {shapes}, not one [batch, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] image input")
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
        raise BackboneError(f"--backbone {path}: gives {shapes}, not one [batch, D] feature vector")
    source = path
    if weights == RANDOM:
        model = keras.models.clone_model(model)  # same architecture, freshly initialised
        source = RANDOM
    elif weights is not None:
        if not os.path.isfile(weights):
            raise BackboneError(f"--backbone_weights {weights}: no such file")
        try:
            model.load_weights(weights)
        except Exception as error:
            raise BackboneError(f"--backbone_weights {weights}: do not fit {path}: {type(error).__name__}: {error}") from error
        source = weights
    model.trainable = False
    return model, source


def load_backbone(backbone: str = INCEPTION_V3, weights: str | None = None) -> tuple[keras.Model, dict]:
    """(frozen model: images [B, 299, 299, 3] 0..255 -> [B, D], info) for ``backbone`` with ``weights``.

    ``info``: ``backbone``, ``weights`` (``random`` | ``imagenet`` | path), ``weights_sha256``, ``feature_dim``,
    ``image_size``. Raises :class:`BackboneError` (one line) for a missing file, unreachable ImageNet
    weights, weights that do not fit, or a model with the wrong input/output shapes.
    """
    if backbone == INCEPTION_V3:
        model = build_backbone(weights)
        source = RANDOM if weights in (None, RANDOM) else weights
        name = INCEPTION_V3
    elif backbone.endswith(".keras"):
        model, source = _load_keras_backbone(backbone, weights)
        name = backbone
    else:
        raise BackboneError(f"--backbone {backbone}: give '{INCEPTION_V3}' or a path to a .keras model file")
    info = {
        "backbone": name,
        "weights": source,
        "weights_sha256": weights_checksum(model),
        "feature_dim": int(model.outputs[0].shape[-1]),
        "image_size": IMAGE_SIZE,
    }
    return model, info
