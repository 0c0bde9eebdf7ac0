"""TFRecord feature spec of training examples: embedding, one label per geoclass set, lat, lng, photo_id.

``feature_spec`` imports TensorFlow lazily so that ``schemas`` stays importable by the geo core and by
Beam jobs that never touch TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import columns as c

SPLIT_TRAIN = "train"
SPLIT_EVAL = "eval"


def feature_spec(embedding_dim: int, set_names: Sequence[str]) -> dict:
    """The ``tf.io.parse_example`` spec for examples written by ``pipelines.make_examples``."""
    import tensorflow as tf

    spec = {
        c.PHOTO_ID: tf.io.FixedLenFeature([], tf.string),
        c.LAT: tf.io.FixedLenFeature([], tf.float32),
        c.LNG: tf.io.FixedLenFeature([], tf.float32),
        c.EMBEDDING: tf.io.FixedLenFeature([embedding_dim], tf.float32),
    }
    for name in set_names:
        spec[c.label_column(name)] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def encode_example(photo_id: str, lat: float, lng: float, embedding, labels: dict[str, int]) -> bytes:
    """Serialize one training example; ``labels`` maps set name -> class id."""
    import tensorflow as tf

    feature = {
        c.PHOTO_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[photo_id.encode("utf-8")])),
        c.LAT: tf.train.Feature(float_list=tf.train.FloatList(value=[lat])),
        c.LNG: tf.train.Feature(float_list=tf.train.FloatList(value=[lng])),
        c.EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, embedding)))),
    }
    for name, label in labels.items():
        feature[c.label_column(name)] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
