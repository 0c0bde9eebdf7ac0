"""Train the per-geoclass-set softmax heads on stored frozen features (paper section 4.1).

Reads the training-examples artifact of ``pipelines.make_examples`` and checks it against the geoclass-sets
artifact it claims to come from; trains one head per set with RMSprop; evaluates on the eval split after
every epoch; checkpoints every epoch (weights, optimizer state and the epoch counter) and resumes from the
last checkpoint when started again on the same ``--job_dir``; writes TensorBoard logs, ``history.json`` and
``curves.png``. Optionally exports the model artifact (``--export_dir``, see ``trainer.export``).

Best epoch and early stopping: after every epoch each head whose eval top-1 improved has its weights
copied into ``checkpoints/best.keras`` (the heads share no parameter, so the best epoch is chosen per head);
that file is what gets exported. With ``--early_stopping_patience N`` training stops once no head has
improved for N epochs. This is Keras' EarlyStopping(restore_best_weights) and ModelCheckpoint(
save_best_only) applied per head; those callbacks watch one metric and reset their state in every ``fit``
call, while this loop runs one ``fit`` per epoch (the data of epoch e is a function of (seed, e)) and must
resume, so the best epochs live in ``state.json``.

Run locally::

    python -m trainer.train --examples out/examples --sets out/geoclass_sets --job_dir out/job \\
        --epochs 5 [--config trainer.yaml] [--steps_per_epoch 1000] [--batch_size 256] [--export_dir out/model \\
        --backbone_weights inception_v3_notop.weights.h5 [--backbone inception_v3|PATH.keras] | --no_geolocator]

Hyperparameters (``trainer.hparams.HParams``) come from defaults, then ``--config``, then flags. A killed run
is resumed by running the same command again: it continues after the last finished epoch and, with the same
seed, ends in the same state as an uninterrupted run (the shuffle order of epoch e depends only on the seed
and e). Raising ``--epochs`` on a finished job dir trains the extra epochs.

On a GPU machine or Vertex AI, run the same module; ``--examples``, ``--sets`` and ``--job_dir`` may be
``gs://`` paths.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from schemas.cli import Parser
from trainer import hparams as hp
from trainer import inputs
from trainer.job_dir import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    CURVES_FILE,
    HISTORY_FILE,
    LOG_DIR,
    STATE_FILE,
    checkpoint_of,
    checkpoint_path,
    export_checkpoint_of,
    read_state,
)
from trainer.model import build_model, head_sizes

log = logging.getLogger("trainer.train")



class ResumeError(ValueError):
    """The job dir holds a run that cannot be continued with the given inputs or hyperparameters."""


@dataclasses.dataclass
class TrainResult:
    model: keras.Model
    job_dir: str
    epochs_trained_now: int
    history: dict[str, list[float]]
    binding: inputs.SetsBinding
    # Each head at its best epoch by eval top-1 (no optimizer state); what gets exported.
    best_model: keras.Model | None = None
    best: dict | None = None
    stopped_early: bool = False

    @property
    def final_metrics(self) -> dict[str, float]:
        return {key: values[-1] for key, values in self.history.items() if values}


# ---------------------------------------------------------------------------------------------- job dir files


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _update_best(best: dict, history: Mapping, head_names, epoch: int, min_delta: float) -> list[str]:
    """Heads whose eval top-1 of ``epoch`` (1-based) beats their best by more than min_delta; updates best."""
    improved = []
    for name in head_names:
        values = history.get(f"val_{name}_top1")
        if not values:
            continue
        value = float(values[-1])
        if name not in best or value > best[name]["top1"] + min_delta:
            best[name] = {"epoch": epoch, "top1": value}
            improved.append(name)
    return improved


def _should_stop(best: Mapping, head_names, epoch: int, patience: int | None) -> bool:
    if patience is None or not best:
        return False
    return all(epoch - best[name]["epoch"] >= patience for name in head_names if name in best)


def _save_checkpoint(model: keras.Model, job_dir: str, epoch: int) -> str:
    """Save model + optimizer state; the state file written afterwards is the commit point."""
    final = checkpoint_path(job_dir, epoch)
    tf.io.gfile.makedirs(os.path.dirname(final))
    partial = final.replace(".keras", ".partial.keras")
    model.save(partial)
    tf.io.gfile.rename(partial, final, overwrite=True)
    return final


def _prune_checkpoints(job_dir: str, keep: int) -> None:
    """Keep the newest ``keep`` epoch checkpoints. Not ``tf.train.CheckpointManager(max_to_keep)``: it writes TF
    checkpoints that ``keras.saving.load_model`` (resume) and ``trainer.export`` cannot read; Keras'
    ``ModelCheckpoint`` has no ``max_to_keep`` (docs/ARCHITECTURE.md, "The trainer and the libraries")."""
    existing = sorted(tf.io.gfile.glob(os.path.join(job_dir, CHECKPOINT_DIR, "epoch-*.keras")))
    for path in [p for p in existing if not p.endswith(".partial.keras")][:-keep]:
        tf.io.gfile.remove(path)


def _check_resumable(state: Mapping, params: hp.HParams, binding: inputs.SetsBinding, job_dir: str) -> None:
    saved = state["hparams"]
    current = params.to_dict()
    changed = sorted(
        key
        for key in set(saved) | set(current)
        if key not in hp.RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )
    if changed:
        detail = ", ".join(
            f"{key}: {saved.get(key)!r} in the job dir vs {current.get(key)!r} now" for key in changed
        )
        raise ResumeError(
            f"{job_dir} holds a run with other hyperparameters ({detail}); use a new --job_dir or the same values"
        )
    if state["sets_checksum"] != binding.checksum or list(state["set_names"]) != list(binding.set_names):
        raise ResumeError(
            f"{job_dir} holds a run on geoclass sets {state['set_names']} (checksum {state['sets_checksum']}), "
            f"but the examples now given are for {list(binding.set_names)} (checksum {binding.checksum})"
        )


# ---------------------------------------------------------------------------------------------- logging/curves


def _tensorboard_callback(log_dir: str) -> keras.callbacks.Callback:
    """Keras' TensorBoard callback, epoch scalars only (``tensorboard`` is pinned in requirements.txt)."""
    return keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch")


def plot_curves(history: Mapping[str, Sequence[float]], set_names: Sequence[str], path: str,
                exported_epoch: int | None = None) -> None:
    """curves.png: loss, top-1 and top-5 per head against epochs, the exported epoch marked (default: last)."""
    from partition_gen.plots import training_curves_png

    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(training_curves_png(history, set_names, exported_epoch))


# ---------------------------------------------------------------------------------------------- training


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds (initial weights); data order has its own (seed, epoch) seeds."""
    keras.utils.set_random_seed(seed)


def enable_op_determinism(enabled: bool) -> None:
    """Bitwise-reproducible kernels (``tf.config.experimental.enable_op_determinism``) when ``enabled``.

    TensorFlow's public API can only switch determinism on, for the whole process and for good: once a
    deterministic run has trained, later TensorFlow work in the same process (other jobs of ``run_all``,
    later tests) runs deterministic kernels too. On CPU that changes no result, only which ops may run
    (TensorFlow refuses the few that have no deterministic kernel); the only way back, a private
    ``tensorflow.python`` function, is deliberately not used.
    """
    if enabled:
        tf.config.experimental.enable_op_determinism()


def train(
    examples_dir: str, sets: str | Mapping, job_dir: str, params: hp.HParams | None = None
) -> TrainResult:
    """Train (or resume training of) the heads; returns the model after the last epoch."""
    params = params or hp.HParams()
    enable_op_determinism(params.deterministic)
    return _train(examples_dir, sets, job_dir, params)


def _train(examples_dir: str, sets: str | Mapping, job_dir: str, params: hp.HParams) -> TrainResult:
    info = inputs.read_examples_info(examples_dir)
    head_names = list(params.heads) if params.heads else list(info.set_names)
    binding = info.binding.restricted_to(head_names)
    inputs.check_binding(binding, inputs.read_sets_binding(sets))
    train_files = inputs.list_shards(examples_dir, inputs.SPLIT_TRAIN)
    eval_files = inputs.list_shards(examples_dir, inputs.SPLIT_EVAL)
    seed_everything(params.seed)
    tf.io.gfile.makedirs(job_dir)
    train_batches = inputs.batches_in(
        inputs.split_size(info, train_files, inputs.SPLIT_TRAIN), params.batch_size
    )
    eval_batches = inputs.batches_in(
        inputs.split_size(info, eval_files, inputs.SPLIT_EVAL), params.batch_size
    )

    centres = None
    if params.label_smoothing_km is not None:
        if isinstance(sets, Mapping):
            raise ValueError("label smoothing needs the geoclass-sets directory (its classes.parquet), not a mapping")
        centres = inputs.read_class_centres(sets, head_names)

    state = read_state(job_dir)
    best: dict = {}
    if state is None:
        model = build_model(
            info.embedding_dim,
            binding.n_classes,
            learning_rate=params.learning_rate,
            rho=params.rho,
            momentum=params.momentum,
            epsilon=params.epsilon,
            seed=params.seed,
            jit_compile=params.jit_compile,
            class_centres=centres,
            label_smoothing_km=params.label_smoothing_km,
        )
        first_epoch, history = 0, {}
    else:
        _check_resumable(state, params, binding, job_dir)
        first_epoch, history = int(state["epoch"]), {k: list(v) for k, v in state["history"].items()}
        best = {name: dict(b) for name, b in (state.get("best") or {}).items()}
        checkpoint = checkpoint_of(job_dir, state)
        log.info("resuming %s after epoch %d from %s", job_dir, first_epoch, checkpoint)
        model = keras.saving.load_model(checkpoint, safe_mode=True)
        if head_sizes(model) != dict(binding.n_classes):
            raise ResumeError(
                f"{checkpoint} has heads {head_sizes(model)}, expected {dict(binding.n_classes)}"
            )

    _write_text_atomic(os.path.join(job_dir, "hparams.json"), json.dumps(params.to_dict(), indent=2) + "\n")
    log.info(
        "training heads %s (classes %s) on %d-d features: epochs %d..%d, %d train / %d eval shards, job dir %s",
        head_names, dict(binding.n_classes), info.embedding_dim, first_epoch + 1, params.epochs,
        len(train_files), len(eval_files), job_dir,
    )  # fmt: skip
    stopped = bool(state and state.get("stopped_early")) and _should_stop(
        best, head_names, first_epoch, params.early_stopping_patience
    )
    if first_epoch >= params.epochs or stopped:
        log.info(
            "nothing to train: %s already holds %d epochs (asked for %d%s)", job_dir, first_epoch, params.epochs,
            ", stopped early" if stopped else "",
        )  # fmt: skip
    tensorboard = _tensorboard_callback(os.path.join(job_dir, LOG_DIR))
    best_model = _load_best(job_dir, state) if best else None
    for epoch in range(first_epoch, params.epochs if not stopped else first_epoch):
        started = time.perf_counter()
        # One fit call per epoch, each on the stream of that epoch, keeps the data a function of (seed, epoch).
        fit = model.fit(
            inputs.train_dataset(
                train_files, info, head_names, params.batch_size, params.seed, epoch, params.shuffle_buffer,
                steps=params.steps_per_epoch, pass_batches=train_batches,
            ),
            validation_data=inputs.eval_dataset(
                eval_files, info, head_names, params.batch_size, params.eval_steps, pass_batches=eval_batches
            ),
            shuffle=False,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=params.verbose,
            callbacks=[tensorboard],
        )  # fmt: skip
        for key, values in fit.history.items():
            history.setdefault(key, []).append(float(values[-1]))
        history.setdefault("epoch_seconds", []).append(time.perf_counter() - started)
        checkpoint = _save_checkpoint(model, job_dir, epoch + 1)
        improved = _update_best(best, history, head_names, epoch + 1, params.early_stopping_min_delta)
        if improved:
            if best_model is None:
                best_model = build_model(info.embedding_dim, binding.n_classes, seed=params.seed, compile=False)
            for name in improved:
                best_model.get_layer(name).set_weights(model.get_layer(name).get_weights())
            _save_best(best_model, job_dir)
        stopped = _should_stop(best, head_names, epoch + 1, params.early_stopping_patience)
        state = {
            "epoch": epoch + 1,
            # Relative to the job dir, so a job dir can be moved or copied (e.g. to gs://) and still resume.
            "checkpoint": os.path.basename(checkpoint),
            "hparams": params.to_dict(),
            "set_names": list(binding.set_names),
            "n_classes": dict(binding.n_classes),
            "sets_checksum": binding.checksum,
            "embedding_dim": info.embedding_dim,
            "history": history,
            "best": best,
            "best_checkpoint": BEST_CHECKPOINT if best else None,
            "stopped_early": stopped,
        }
        _write_text_atomic(os.path.join(job_dir, STATE_FILE), json.dumps(state, indent=1) + "\n")
        _prune_checkpoints(job_dir, params.keep_checkpoints)
        _write_text_atomic(os.path.join(job_dir, HISTORY_FILE), json.dumps(history, indent=1) + "\n")
        plot_curves(history, head_names, os.path.join(job_dir, CURVES_FILE))
        log.info(
            "epoch %d/%d done in %.1fs: %s", epoch + 1, params.epochs, history["epoch_seconds"][-1],
            ", ".join(f"{name} eval top1 {history.get(f'val_{name}_top1', [float('nan')])[-1]:.3f}" for name in head_names),
        )  # fmt: skip
        if stopped:
            log.info(
                "early stopping after epoch %d: no head improved for %d epochs; best epochs %s",
                epoch + 1, params.early_stopping_patience, {n: b["epoch"] for n, b in best.items()},
            )  # fmt: skip
            break
    return TrainResult(
        model=model,
        job_dir=job_dir,
        epochs_trained_now=int(len(history.get("epoch_seconds", [])) - first_epoch),
        history=history,
        binding=binding,
        best_model=best_model,
        best=best,
        stopped_early=bool(stopped),
    )


def _save_best(best_model: keras.Model, job_dir: str) -> None:
    final = os.path.join(job_dir, CHECKPOINT_DIR, BEST_CHECKPOINT)
    partial = final.replace(".keras", ".partial.keras")
    best_model.save(partial)
    tf.io.gfile.rename(partial, final, overwrite=True)


def _load_best(job_dir: str, state: Mapping | None) -> keras.Model | None:
    if not state or not state.get("best_checkpoint"):
        return None
    return keras.saving.load_model(export_checkpoint_of(job_dir, state), compile=False, safe_mode=True)


def run(argv: Sequence[str] | None = None) -> TrainResult:
    parser = Parser(prog="trainer.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", required=True, help="training-examples artifact dir (make_examples)")
    parser.add_argument("--sets", required=True, help="geoclass-sets artifact dir (or its sets.json)")
    parser.add_argument("--job_dir", required=True, help="checkpoints, logs, history; reuse it to resume")
    parser.add_argument(
        "--export_dir", default=None, help="also export the model artifact here after training"
    )
    from trainer.export import DEFAULT_BACKBONE, add_backbone_flags

    # The backbone the examples' features come from: built into the exported geolocator, recorded in its manifest.
    add_backbone_flags(parser)
    parser.add_argument("--no_geolocator", action="store_true", help="export the features model only")
    hp.add_flags(parser)
    args = parser.parse_args(argv)  # an unknown flag: one line naming the nearest valid one, status 2
    params = hp.from_args(args)
    if args.export_dir and not args.no_geolocator:
        # Found out now rather than after the last epoch.
        if args.backbone == DEFAULT_BACKBONE and args.backbone_weights is None:
            parser.error(
                "--export_dir with a geolocator needs the backbone's weights: --backbone_weights FILE, imagenet "
                "or random (tests only); or add --no_geolocator to export the features model only"
            )
        if args.backbone == DEFAULT_BACKBONE:
            from trainer.backbone import FEATURE_DIM

            dim = inputs.read_examples_info(args.examples).embedding_dim
            if dim != FEATURE_DIM:
                parser.error(
                    f"--export_dir with a geolocator needs {FEATURE_DIM}-d Inception features, but {args.examples} "
                    f"holds {dim}-d embeddings; add --no_geolocator to export the features model only"
                )
    result = train(args.examples, args.sets, args.job_dir, params)
    if args.export_dir:
        from trainer.export import export_model

        export_model(
            result.best_model if result.best_model is not None else result.model,
            args.export_dir,
            args.sets,
            backbone_weights=args.backbone_weights,
            with_geolocator=not args.no_geolocator,
            trained_checksum=result.binding.checksum,
            backbone=args.backbone,
        )
    return result


if __name__ == "__main__":
    from schemas.cli import main

    main("trainer.train")
