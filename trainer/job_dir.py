"""The layout of a trainer job dir, shared by training (which writes it) and export (which reads it).

``JOB_DIR/state.json`` (the last finished epoch, its checkpoint, each head's best epoch, the hyperparameters),
``history.json``, ``curves.png``, ``checkpoints/epoch-NNNN.keras`` (newest few) and ``checkpoints/best.keras``
(every head at its best eval epoch), ``logs/`` (TensorBoard). Keeping the layout here lets ``trainer.train``
and ``trainer.export`` both depend on it without depending on each other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import tensorflow as tf

STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.keras"
LOG_DIR = "logs"


def read_state(job_dir: str) -> dict | None:
    path = os.path.join(job_dir, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as handle:
        return json.loads(handle.read())


def checkpoint_path(job_dir: str, epoch: int) -> str:
    return os.path.join(job_dir, CHECKPOINT_DIR, f"epoch-{epoch:04d}.keras")


def checkpoint_of(job_dir: str, state: Mapping) -> str:
    """The checkpoint file a state record points to."""
    return os.path.join(job_dir, CHECKPOINT_DIR, os.path.basename(state["checkpoint"]))


def export_checkpoint_of(job_dir: str, state: Mapping) -> str:
    """The checkpoint to export: every head at its best epoch when the run kept one, else the newest."""
    if state.get("best_checkpoint"):
        return os.path.join(job_dir, CHECKPOINT_DIR, os.path.basename(state["best_checkpoint"]))
    return checkpoint_of(job_dir, state)


def training_summary(job_dir: str) -> dict:
    """Per head the chosen (best) epoch and its eval top-1, the epochs run, and whether training stopped early."""
    state = read_state(job_dir)
    if state is None:
        raise FileNotFoundError(f"{job_dir} has no {STATE_FILE}: no epoch of training has finished there")
    best = state.get("best") or {}
    return {
        "epochs_run": int(state["epoch"]),
        "epochs_max": int(state["hparams"]["epochs"]),
        "stopped_early": bool(state.get("stopped_early", False)),
        "early_stopping_patience": state["hparams"].get("early_stopping_patience"),
        "label_smoothing_km": state["hparams"].get("label_smoothing_km"),
        "best_epoch": {name: int(b["epoch"]) for name, b in best.items()},
        "best_eval_top1": {name: float(b["top1"]) for name, b in best.items()},
    }


def latest_checkpoint(job_dir: str) -> tuple[str, str]:
    """(checkpoint to export, sets checksum it was trained on) of a job dir: every head at its best eval epoch
    when the run kept one, else the newest checkpoint."""
    state = read_state(job_dir)
    if state is None:
        raise FileNotFoundError(f"{job_dir} has no {STATE_FILE}: no epoch of training has finished there")
    return export_checkpoint_of(job_dir, state), state["sets_checksum"]
