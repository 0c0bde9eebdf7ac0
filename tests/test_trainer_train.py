"""trainer.hparams, trainer.inputs and trainer.train on small generated TFRecord artifacts.

The generated data mimics geography: each row belongs to one of M fine latent "places" whose feature is a
Gaussian around the place's centre; each geoclass set groups places into coarser classes. Labels are
therefore learnable by a linear softmax, and eval rows are drawn independently of train rows (held out).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import hparams as hp
from trainer import inputs
from trainer.train import ResumeError, run, train

DIM = 32  # >= PLACES, so every grouping of places into classes is linearly separable
PLACES = 24
N_CLASSES = {"set1": 8, "set2": 12}
CHECKSUM = "a" * 64


def _generate(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[np.ndarray, dict]:
    place = rng.integers(0, PLACES, size=n)
    x = centres[place] + rng.normal(size=(n, DIM))
    labels = {"set1": place % 8, "set2": place // 2}
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(PLACES, DIM)) * 2.0
    splits = {"train": _generate(rng, 2400, centres), "eval": _generate(rng, 600, centres)}
    examples = str(root / "examples")
    sets = str(root / "sets")
    inputs.write_examples_from_arrays(examples, splits, N_CLASSES, CHECKSUM, shards_per_split=3)
    inputs.write_sets_json(sets, N_CLASSES, CHECKSUM)
    return {"root": root, "examples": examples, "sets": sets, "splits": splits}


def _params(**overrides) -> hp.HParams:
    base = {"epochs": 2, "batch_size": 64, "shuffle_buffer": 512, "verbose": 0, "seed": 7}
    return hp.HParams(**{**base, **overrides})


# ------------------------------------------------------------------------------------------------ hparams


def test_hparams_defaults_then_config_then_flags(tmp_path):
    assert hp.HParams().learning_rate == 0.005
    config = tmp_path / "c.yaml"
    config.write_text("batch_size: 32\nepochs: 4\nheads: [set1]\n")
    params = hp.parse(["--config", str(config), "--epochs", "9", "--deterministic", "false"])
    assert (params.batch_size, params.epochs, params.heads, params.deterministic) == (32, 9, ("set1",), False)
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"learning_rate": 0.01, "steps_per_epoch": 5}))
    params = hp.parse(["--config", str(as_json), "--heads", "set1,set2"])
    assert (params.learning_rate, params.steps_per_epoch, params.heads) == (0.01, 5, ("set1", "set2"))


def test_hparams_reject_unknown_keys_and_bad_values(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lerning_rate": 0.1}))
    with pytest.raises(ValueError, match="lerning_rate"):
        hp.parse(["--config", str(config)])
    # A bad flag value is argparse's usage error (exit 2) naming the flag, from the field's own type.
    with pytest.raises(SystemExit) as stop:
        hp.parse(["--batch_size", "many"])
    assert stop.value.code == 2
    assert "--batch_size" in capsys.readouterr().err
    config.write_text(json.dumps({"batch_size": 2.5}))
    with pytest.raises(ValueError, match="'batch_size' expects int, got 2.5"):
        hp.parse(["--config", str(config)])
    with pytest.raises(ValueError, match="epochs"):
        hp.parse(["--epochs", "0"])


def test_hparams_types_come_from_the_dataclass_fields(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"steps_per_epoch": 5, "label_smoothing_km": 25, "batch_size": "1e2"}))
    params = hp.parse(["--config", str(config), "--steps_per_epoch", "none", "--deterministic", "no"])
    assert params.steps_per_epoch is None and params.deterministic is False and params.batch_size == 100
    assert params.label_smoothing_km == 25.0 and isinstance(params.label_smoothing_km, float)
    # None words mean unset only where the field may be unset.
    with pytest.raises(SystemExit):
        hp.parse(["--batch_size", "none"])
    assert hp.parse(["--heads", "set1, set2,"]).heads == ("set1", "set2")


# ------------------------------------------------------------------------------------------------ inputs


def _rows(dataset) -> list[tuple]:
    rows = []
    for embedding, labels in dataset:
        embedding = np.round(embedding.numpy(), 5)
        set1, set2 = labels["set1"].numpy(), labels["set2"].numpy()
        rows.extend((tuple(embedding[i]), int(set1[i]), int(set2[i])) for i in range(len(embedding)))
    return rows


def test_eval_dataset_yields_exactly_the_written_rows(artifacts):
    info = inputs.read_examples_info(artifacts["examples"])
    assert info.embedding_dim == DIM and dict(info.n_classes) == N_CLASSES
    files = inputs.list_shards(artifacts["examples"], "eval")
    got = _rows(inputs.eval_dataset(files, info, list(N_CLASSES), batch_size=50))
    x, labels = artifacts["splits"]["eval"]
    want = [(tuple(np.round(x[i], 5)), int(labels["set1"][i]), int(labels["set2"][i])) for i in range(len(x))]
    assert sorted(got) == sorted(want)


def test_train_epoch_is_a_permutation_fixed_by_seed_and_epoch(artifacts):
    info = inputs.read_examples_info(artifacts["examples"])
    files = inputs.list_shards(artifacts["examples"], "train")

    def epoch_rows(seed, epoch, steps=None):
        return _rows(inputs.train_dataset(files, info, list(N_CLASSES), 64, seed, epoch, 512, steps=steps))

    first = epoch_rows(7, 0)
    x, labels = artifacts["splits"]["train"]
    want = [(tuple(np.round(x[i], 5)), int(labels["set1"][i]), int(labels["set2"][i])) for i in range(len(x))]
    assert sorted(first) == sorted(want)
    assert epoch_rows(7, 0) == first
    assert epoch_rows(7, 1) != first
    assert epoch_rows(8, 0) != first
    # With a step count the epoch is that many batches of a stream that keeps going past one pass.
    long_epoch = epoch_rows(7, 0, steps=80)
    assert len(long_epoch) == 80 * 64
    assert long_epoch == epoch_rows(7, 0, steps=80)
    n = len(x)
    first_pass, second_pass = long_epoch[:n], long_epoch[n : 2 * n]
    assert sorted(first_pass) == sorted(want) == sorted(second_pass)
    assert first_pass != second_pass


def test_out_of_range_labels_stop_with_the_set_named(tmp_path):
    x = np.zeros((10, 3), np.float32)
    labels = {"set1": np.full(10, 5)}
    examples = str(tmp_path / "ex")
    inputs.write_examples_from_arrays(examples, {"train": (x, labels), "eval": (x, labels)}, {"set1": 5}, "c")
    info = inputs.read_examples_info(examples)
    files = inputs.list_shards(examples, "eval")
    with pytest.raises(tf.errors.InvalidArgumentError, match="label_set1.*n_classes 5"):
        list(inputs.eval_dataset(files, info, ["set1"], batch_size=4))


def test_an_examples_dir_without_success_marker_is_refused(tmp_path, artifacts):
    from schemas.io import IncompleteArtifactError

    with pytest.raises(IncompleteArtifactError, match="_SUCCESS"):
        inputs.read_examples_info(str(tmp_path))


# ------------------------------------------------------------------------------------------------ training


def test_training_learns_the_labels_far_above_chance_on_held_out_rows(artifacts):
    job = str(artifacts["root"] / "job_learn")
    result = train(artifacts["examples"], artifacts["sets"], job, _params(epochs=3))
    x, labels = artifacts["splits"]["eval"]
    probs = result.model.predict(x, verbose=0)
    for name, k in N_CLASSES.items():
        accuracy = float(np.mean(np.argmax(probs[name], axis=1) == labels[name]))
        majority = np.bincount(labels[name], minlength=k).max() / len(x)
        assert accuracy > 0.85, (name, accuracy)
        assert accuracy > 4 * max(1 / k, majority), (name, accuracy, majority)
        # The metric computed through the TFRecord pipeline agrees with the NumPy one on the same rows.
        assert result.history[f"val_{name}_top1"][-1] == pytest.approx(accuracy, abs=1e-6)
    # Artifacts of the job dir: history, curves, TensorBoard events, the newest checkpoints only.
    history = json.loads((artifacts["root"] / "job_learn" / "history.json").read_text())
    assert len(history["val_set1_top1"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert (artifacts["root"] / "job_learn" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tf.io.gfile.glob(os.path.join(job, "logs", "validation", "events.out.tfevents.*"))
    assert sorted(os.listdir(os.path.join(job, "checkpoints"))) == ["best.keras", "epoch-0002.keras", "epoch-0003.keras"]


def test_killed_run_resumes_to_the_state_of_an_uninterrupted_run(artifacts):
    """Kill after epoch 1 = run epochs=1, then start again with epochs=2 on the same job dir.

    Tolerance: exact (atol 0) for weights and RMSprop slots; op determinism is on and the shuffle of each
    epoch depends only on (seed, epoch), so nothing is allowed to differ.
    """
    root = artifacts["root"]
    interrupted, uninterrupted, other_seed = (
        str(root / name) for name in ("job_killed", "job_whole", "job_seed")
    )
    train(artifacts["examples"], artifacts["sets"], interrupted, _params(epochs=1))
    resumed = train(artifacts["examples"], artifacts["sets"], interrupted, _params(epochs=2))
    whole = train(artifacts["examples"], artifacts["sets"], uninterrupted, _params(epochs=2))
    assert resumed.epochs_trained_now == 1 and whole.epochs_trained_now == 2
    assert (
        int(resumed.model.optimizer.iterations.numpy()) == int(whole.model.optimizer.iterations.numpy()) > 0
    )
    for got, want in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(got, want)
    slots = [v for v in whole.model.optimizer.variables if "velocity" in v.path]
    assert slots
    for got, want in zip(resumed.model.optimizer.variables, whole.model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert resumed.history["val_set1_top1"] == whole.history["val_set1_top1"]
    # Control: the comparison can fail. Another seed ends elsewhere.
    other = train(artifacts["examples"], artifacts["sets"], other_seed, _params(epochs=2, seed=8))
    assert (
        max(np.abs(a - b).max() for a, b in zip(other.model.get_weights(), whole.model.get_weights())) > 1e-3
    )
    # A finished job dir asked for the same number of epochs trains nothing and keeps its state.
    again = train(artifacts["examples"], artifacts["sets"], uninterrupted, _params(epochs=2))
    assert again.epochs_trained_now == 0
    for got, want in zip(again.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_resume_with_other_hyperparameters_or_other_sets_is_refused(artifacts, tmp_path):
    job = str(artifacts["root"] / "job_refuse")
    train(artifacts["examples"], artifacts["sets"], job, _params(epochs=1))
    with pytest.raises(ResumeError, match="batch_size: 64 in the job dir vs 32 now"):
        train(artifacts["examples"], artifacts["sets"], job, _params(epochs=2, batch_size=32))
    other_sets = str(tmp_path / "other_sets")
    inputs.write_sets_json(other_sets, N_CLASSES, "b" * 64)
    with pytest.raises(inputs.BindingError, match="checksum a+ != b+"):
        train(artifacts["examples"], other_sets, str(tmp_path / "fresh"), _params(epochs=1))
    smaller = str(tmp_path / "smaller_sets")
    inputs.write_sets_json(smaller, {"set1": 8, "set2": 10}, CHECKSUM)
    with pytest.raises(inputs.BindingError, match="'set2' has 12 classes, not 10"):
        train(artifacts["examples"], smaller, str(tmp_path / "fresh"), _params(epochs=1))


def test_cli_reads_config_and_flags_and_trains_a_subset_of_heads(artifacts, tmp_path):
    config = tmp_path / "trainer.json"
    config.write_text(json.dumps({"batch_size": 128, "epochs": 5, "verbose": 0, "heads": ["set2"]}))
    job = str(tmp_path / "job_cli")
    result = run(
        ["--examples", artifacts["examples"], "--sets", artifacts["sets"], "--job_dir", job,
         "--config", str(config), "--epochs", "1", "--steps_per_epoch", "4"]
    )  # fmt: skip
    saved = json.loads((tmp_path / "job_cli" / "hparams.json").read_text())
    assert (saved["batch_size"], saved["epochs"], saved["steps_per_epoch"], saved["heads"]) == (
        128,
        1,
        4,
        ["set2"],
    )
    assert list(result.model.output) == ["set2"]
    assert int(result.model.optimizer.iterations.numpy()) == 4


def test_deterministic_training_switches_op_determinism_on():
    # Read through the private getter only to observe it: the trainer uses the public switch, which
    # TensorFlow offers only one way (trainer.train.enable_op_determinism says what that means).
    from tensorflow.python.framework import config as tf_config

    from trainer.train import enable_op_determinism

    enable_op_determinism(False)
    was = tf_config.is_op_determinism_enabled()
    enable_op_determinism(True)
    assert tf_config.is_op_determinism_enabled()
    if not was:
        tf_config.disable_op_determinism()  # leave the test process as this test found it
