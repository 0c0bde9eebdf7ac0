"""Hyperparameters of the trainer: one dataclass with the paper's defaults, filled from a config file and flags.

Precedence, lowest to highest: the defaults below, a JSON or YAML config file (``--config FILE``), then
command-line flags. Every field is a flag of the same name (``--batch_size 512``), so a config file is only
a convenient way to keep a run's choices in version control.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class HParams:
    # Paper section 5.2: RMSprop with a learning rate of 0.005 on frozen Inception features.
    learning_rate: float = 0.005
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    batch_size: int = 256
    epochs: int = 10
    # None: one full pass over the training shards per epoch. A number: that many batches per epoch,
    # drawn from a stream that repeats the shards with a fresh shuffle for each pass.
    steps_per_epoch: int | None = None
    # None: the whole eval split after every epoch.
    eval_steps: int | None = None
    shuffle_buffer: int = 10_000
    seed: int = 0
    # Names of the geoclass sets to train heads for (comma-separated on the command line); None: every
    # set in the examples.
    heads: tuple[str, ...] | None = None
    # Bitwise-reproducible kernels, so a resumed run ends in the same state as an uninterrupted one.
    deterministic: bool = True
    jit_compile: bool = False
    # How many epoch checkpoints to keep in JOB_DIR/checkpoints (the newest ones).
    keep_checkpoints: int = 2
    # Keras progress display: 0 silent, 1 progress bar, 2 one line per epoch.
    verbose: int = 1
    # Early stopping on the eval split: stop when no head's eval top-1 has improved by more than
    # early_stopping_min_delta for this many epochs; None trains all ``epochs``. Either way each head's best
    # epoch (eval top-1) is kept in JOB_DIR/checkpoints/best.keras and is what gets exported.
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    # Haversine label smoothing (PIGEON): soft targets exp(-(d(c, c_true) - d_min) / tau) over the class
    # centres of the sets artifact, tau in km; None: one-hot labels (the paper's cross-entropy).
    label_smoothing_km: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        for name in ("steps_per_epoch", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 or unset, got {value}")
        if self.shuffle_buffer < 1:
            problems.append(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(f"early_stopping_patience must be >= 1 or unset, got {self.early_stopping_patience}")
        if self.label_smoothing_km is not None and not self.label_smoothing_km > 0:
            problems.append(f"label_smoothing_km must be > 0 or unset, got {self.label_smoothing_km}")
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if problems:
            raise ValueError("bad hyperparameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["heads"] = list(self.heads) if self.heads is not None else None
        return values


# Fields that may change between a run and its resumption without breaking reproducibility.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "verbose", "keep_checkpoints", "eval_steps", "early_stopping_patience", "early_stopping_min_delta"}
)


_NONE_WORDS = ("none", "null", "")


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return lowered in ("true", "1", "yes")
    return bool(value)


def _to_int(value: Any) -> int:
    # "1e4" and 10000.0 are whole numbers; 2.5 is not.
    as_float = float(value)
    if as_float != int(as_float):
        raise ValueError(value)
    return int(as_float)


def _to_names(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


_CONVERTERS = {bool: _to_bool, int: _to_int, float: float, tuple: _to_names}


def _converter(name: str, hint: Any):
    """The value -> field converter of one field, from its real type (``X`` or ``X | None``)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(arg for arg in args if arg is not type(None))
    kind = typing.get_origin(hint) or hint
    convert = _CONVERTERS[kind]

    def to_field(value: Any) -> Any:
        if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        try:
            return convert(value)
        except (TypeError, ValueError):
            # argparse shows this message for a flag; from_mapping raises it for a config value.
            raise ValueError(f"hyperparameter '{name}' expects {hint_text[name]}, got {value!r}") from None

    return to_field


# The field types as Python objects (the module's ``from __future__ import annotations`` keeps them as strings).
_HINTS = typing.get_type_hints(HParams)
hint_text = {f.name: str(f.type) for f in dataclasses.fields(HParams)}
CONVERTERS = {name: _converter(name, hint) for name, hint in _HINTS.items()}


def load_config(path: str) -> dict[str, Any]:
    """Read a JSON or YAML config file (by extension) into a dict of hyperparameters."""
    import tensorflow as tf  # gfile: the config may live on gs:// next to the job.

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    with tf.io.gfile.GFile(path, "r") as handle:
        text = handle.read()
    if os.path.splitext(path)[1].lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of hyperparameters, got {type(values).__name__}"
        )
    return values


def from_mapping(values: Mapping[str, Any], base: HParams | None = None) -> HParams:
    """``base`` (default: the defaults) with ``values`` applied; unknown keys are an error, not ignored."""
    unknown = sorted(set(values) - set(CONVERTERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(CONVERTERS)}")
    base = base or HParams()
    return dataclasses.replace(base, **{name: CONVERTERS[name](value) for name, value in values.items()})


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--name`` flag per field, parsed by the field's converter; only flags actually given override."""
    group = parser.add_argument_group("hyperparameters (override --config)")
    group.add_argument("--config", default=None, help="JSON or YAML file of hyperparameters")
    for field in dataclasses.fields(HParams):
        group.add_argument(
            f"--{field.name}",
            # Absent unless given, so "--steps_per_epoch none" can still override a config's number.
            default=argparse.SUPPRESS,
            type=_flag_type(field.name),
            help=f"{field.type}, default {field.default!r}",
        )


def _flag_type(name: str):
    """The field's converter for argparse, whose usage error then names the flag and the value."""

    def parse_flag(text: str) -> Any:
        try:
            return CONVERTERS[name](text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_flag


def from_args(args: argparse.Namespace) -> HParams:
    """Defaults, then ``args.config``, then the flags that were given."""
    config = load_config(args.config) if getattr(args, "config", None) else {}
    hparams = from_mapping(config)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(HParams) if hasattr(args, f.name)}
    return from_mapping(flags, base=hparams)


def parse(argv: Sequence[str] | None = None) -> HParams:
    """Hyperparameters from a bare argument list (handy in notebooks and tests)."""
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args, _ = parser.parse_known_args(argv)
    return from_args(args)
