"""The frozen Inception v3 backbone: 299x299 RGB images (0..255) -> 2048-d average-pooled bottleneck.

Shared by the feature-extraction job (``pipelines.extract_features`` runs it through RunInference) and by the
exported geolocator (backbone + heads). Weights come from a local file (``--backbone_weights PATH``, an
``.h5``/``.weights.h5`` of ``InceptionV3(include_top=False)``), from ``"imagenet"`` where a network exists,
or are random (``None``) in tests; nothing is downloaded unless ``"imagenet"`` is asked for.
"""

from __future__ import annotations

import keras

IMAGE_SIZE = 299
FEATURE_DIM = 2048
IMAGE_INPUT_NAME = "image"


def build_backbone(weights: str | None = None, name: str = "inception_v3_backbone") -> keras.Model:
    """Images float32 [batch, 299, 299, 3] in 0..255 -> features [batch, 2048]; frozen.

    The Inception preprocessing (x / 127.5 - 1) is a Rescaling layer inside the model, so a saved
    ``.keras`` file is self-contained and loads in Keras safe mode (no Lambda layers).
    """
    images = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name=IMAGE_INPUT_NAME)
    scaled = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="inception_preprocess")(images)
    base_weights = "imagenet" if weights == "imagenet" else None
    base = keras.applications.InceptionV3(
        include_top=False, weights=base_weights, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), pooling="avg"
    )
    if weights not in (None, "imagenet"):
        base.load_weights(weights)
    base.trainable = False
    features = base(scaled, training=False)
    return keras.Model(images, features, name=name)
