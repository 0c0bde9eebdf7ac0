"""Keras trainer of the per-geoclass-set heads: hparams, inputs, model, training, export."""

# Before TensorFlow is imported: quiet native logs, fast --help.
from schemas.startup import prepare_process

prepare_process(__name__)
