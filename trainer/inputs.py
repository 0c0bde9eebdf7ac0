"""Input side of the trainer: the training-examples artifact, the geoclass-sets artifact, and tf.data over them.

The examples directory (written by ``pipelines.make_examples``, see docs/ARTIFACTS.md) holds GZIP TFRecord
shards ``train-*.tfrecord.gz`` and ``eval-*.tfrecord.gz``, ``examples.json`` (embedding_dim, set_names,
n_classes, sets_checksum) and ``_SUCCESS``. Each example carries one label per geoclass set.

The training stream of epoch ``e`` is a pure function of ``(seed, e)``: the shard order and the shuffle
buffer are seeded from both, so a run resumed at epoch ``e`` sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import tensorflow as tf

from schemas import columns as c
from schemas.artifacts import SETS_JSON, read_sets_json, sets_json_path
from schemas.io import SUCCESS_MARKER, IncompleteArtifactError
from schemas.tfrecord import SPLIT_EVAL, SPLIT_TRAIN, feature_spec

EXAMPLES_METADATA = "examples.json"
SHARD_SUFFIX = ".tfrecord.gz"


class BindingError(ValueError):
    """Two artifacts that must come from the same geoclass sets do not; the message names both sides."""


@dataclasses.dataclass(frozen=True)
class SetsBinding:
    """What ties a model or an examples artifact to one geoclass-sets artifact."""

    set_names: tuple[str, ...]
    n_classes: Mapping[str, int]
    checksum: str
    source: str

    def restricted_to(self, set_names: Sequence[str]) -> SetsBinding:
        missing = [name for name in set_names if name not in self.n_classes]
        if missing:
            raise BindingError(f"sets {missing} are not in {self.source} (it has {list(self.set_names)})")
        return dataclasses.replace(
            self, set_names=tuple(set_names), n_classes={name: self.n_classes[name] for name in set_names}
        )


@dataclasses.dataclass(frozen=True)
class ExamplesInfo:
    path: str
    embedding_dim: int
    binding: SetsBinding
    metadata: Mapping

    @property
    def set_names(self) -> tuple[str, ...]:
        return self.binding.set_names

    @property
    def n_classes(self) -> Mapping[str, int]:
        return self.binding.n_classes


def _read_json(path: str) -> dict:
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    with tf.io.gfile.GFile(path, "r") as handle:
        try:
            return json.loads(handle.read())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None


def _require_complete(directory: str) -> None:
    if not tf.io.gfile.exists(os.path.join(directory, SUCCESS_MARKER)):
        raise IncompleteArtifactError(
            f"{directory}: no {SUCCESS_MARKER} marker; the job that writes it did not finish"
        )


def _require_keys(document: Mapping, keys: Sequence[str], source: str) -> None:
    missing = [key for key in keys if key not in document]
    if missing:
        raise ValueError(f"{source} lacks the keys {missing} (has {sorted(document)})")


def read_examples_info(examples_dir: str) -> ExamplesInfo:
    """``examples.json`` of a completed examples artifact, checked for the keys the trainer needs."""
    _require_complete(examples_dir)
    path = os.path.join(examples_dir, EXAMPLES_METADATA)
    meta = _read_json(path)
    _require_keys(meta, ("embedding_dim", "set_names", "n_classes", "sets_checksum"), path)
    set_names = tuple(meta["set_names"])
    missing = [name for name in set_names if name not in meta["n_classes"]]
    if missing:
        raise ValueError(f"{path}: n_classes has no entry for sets {missing}")
    binding = SetsBinding(
        set_names=set_names,
        n_classes={name: int(meta["n_classes"][name]) for name in set_names},
        checksum=str(meta["sets_checksum"]),
        source=path,
    )
    return ExamplesInfo(
        path=examples_dir, embedding_dim=int(meta["embedding_dim"]), binding=binding, metadata=meta
    )


def read_sets_binding(sets: str | os.PathLike | Mapping) -> SetsBinding:
    """The binding of a geoclass-sets artifact: its directory, its ``sets.json``, or a mapping.

    A mapping may be a parsed ``sets.json`` (``checksum``, ``sets``) or a model manifest
    (``sets_checksum``, ``set_names``, ``n_classes``).
    """
    if isinstance(sets, Mapping):
        document, source = dict(sets), "the given sets mapping"
    else:
        # The one sets.json reader: marker verified, format and keys checked (schemas.artifacts).
        source = sets_json_path(os.fspath(sets))
        document = read_sets_json(source)
    if "sets_checksum" in document:
        _require_keys(document, ("set_names", "n_classes"), source)
        names = tuple(document["set_names"])
        return SetsBinding(
            set_names=names,
            n_classes={name: int(document["n_classes"][name]) for name in names},
            checksum=str(document["sets_checksum"]),
            source=source,
        )
    _require_keys(document, ("checksum", "sets"), source)
    names, n_classes = [], {}
    for entry in document["sets"]:
        _require_keys(entry, ("name", "n_classes"), f"{source} (a set entry)")
        names.append(str(entry["name"]))
        n_classes[str(entry["name"])] = int(entry["n_classes"])
    return SetsBinding(
        set_names=tuple(names), n_classes=n_classes, checksum=str(document["checksum"]), source=source
    )


CLASSES_TABLE = "classes.parquet"


def read_class_centres(sets: str | os.PathLike, set_names: Sequence[str]) -> dict:
    """{set name: (K, 2) float64 lat/lng of each class's image-weighted centre} from ``classes.parquet``.

    The centres come from the geoclass-sets artifact (one row per set and class), so label smoothing needs
    nothing stored per example.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.io import read_bytes

    path = os.fspath(sets)
    if not tf.io.gfile.isdir(path):
        path = os.path.dirname(path)
    table_path = os.path.join(path, CLASSES_TABLE)
    if not tf.io.gfile.exists(table_path):
        raise FileNotFoundError(f"{table_path} does not exist: label smoothing needs the class centres of the sets")
    table = pq.read_table(pa.BufferReader(read_bytes(table_path)), columns=[c.SET_ID, c.CLASS_ID, c.LAT, c.LNG])
    set_ids = np.asarray(table.column(c.SET_ID).to_pylist(), dtype=object)
    class_ids = table.column(c.CLASS_ID).to_numpy()
    lat, lng = table.column(c.LAT).to_numpy(), table.column(c.LNG).to_numpy()
    centres = {}
    for name in set_names:
        rows = np.flatnonzero(set_ids == name)
        if rows.size == 0:
            raise ValueError(f"{table_path} has no classes of set '{name}'")
        k = int(class_ids[rows].max()) + 1
        if rows.size != k or len(np.unique(class_ids[rows])) != k:
            raise ValueError(f"{table_path}: set '{name}' does not list each of its {k} classes once")
        out = np.empty((k, 2))
        out[class_ids[rows], 0] = lat[rows]
        out[class_ids[rows], 1] = lng[rows]
        centres[name] = out
    return centres


def check_binding(bound: SetsBinding, artifact: SetsBinding) -> None:
    """Refuse ``bound`` (a model or examples) unless it was built from the sets of ``artifact``.

    ``bound`` may cover a subset of the artifact's sets (heads for some sets only), but every set it has
    must exist there with the same class count, and the checksums (which cover every assignment) must agree.
    """
    problems = []
    if bound.checksum != artifact.checksum:
        problems.append(f"sets checksum {bound.checksum} != {artifact.checksum}")
    for name in bound.set_names:
        if name not in artifact.n_classes:
            problems.append(f"set '{name}' is missing (the sets artifact has {list(artifact.set_names)})")
        elif int(bound.n_classes[name]) != int(artifact.n_classes[name]):
            problems.append(
                f"set '{name}' has {bound.n_classes[name]} classes, not {artifact.n_classes[name]}"
            )
    if problems:
        raise BindingError(
            f"{bound.source} was not built from the geoclass sets at {artifact.source}: "
            + "; ".join(problems)
        )


def list_shards(examples_dir: str, split: str) -> list[str]:
    """The split's shards in name order (the order is part of what makes a run reproducible)."""
    if split not in (SPLIT_TRAIN, SPLIT_EVAL):
        raise ValueError(f"split must be '{SPLIT_TRAIN}' or '{SPLIT_EVAL}', got {split!r}")
    files = sorted(tf.io.gfile.glob(os.path.join(examples_dir, f"{split}-*{SHARD_SUFFIX}")))
    if not files:
        raise FileNotFoundError(f"{examples_dir}: no {split}-*{SHARD_SUFFIX} shards")
    return files


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed that differs per (seed, epoch), stable across processes (no Python ``hash``)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 12345) % (2**31 - 1)


def _parse_batch(
    serialized: tf.Tensor, embedding_dim: int, set_names: Sequence[str], n_classes: Mapping[str, int]
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    parsed = tf.io.parse_example(serialized, feature_spec(embedding_dim, set_names))
    labels = {}
    for name in set_names:
        label = parsed[c.label_column(name)]
        # Out-of-range labels would otherwise surface as an opaque kernel error in the loss.
        checks = [
            tf.debugging.assert_non_negative(label, message=f"negative label in '{c.label_column(name)}'"),
            tf.debugging.assert_less(
                label,
                tf.constant(n_classes[name], tf.int64),
                message=f"label in '{c.label_column(name)}' >= n_classes {n_classes[name]} of set '{name}'",
            ),
        ]
        with tf.control_dependencies(checks):
            labels[name] = tf.identity(label)
    return parsed[c.EMBEDDING], labels


def _records(files: Sequence[str], shuffle_seed: int | None, reshuffle: bool = False) -> tf.data.Dataset:
    filenames = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_seed is not None:
        filenames = filenames.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
    return filenames.interleave(
        lambda name: tf.data.TFRecordDataset(name, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        block_length=16,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def train_dataset(
    files: Sequence[str],
    info: ExamplesInfo,
    set_names: Sequence[str],
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
    steps: int | None = None,
    pass_batches: int | None = None,
) -> tf.data.Dataset:
    """Epoch ``epoch`` of training: (embedding [B, D], {set: label [B]}) batches.

    With ``steps`` the epoch is that many batches of an endless stream whose passes are each shuffled
    afresh (still a function of seed and epoch); without, it is one shuffled pass. ``pass_batches`` (the
    batches in one pass, if known) lets Keras show the epoch's length and checks the metadata's count.
    """
    base = epoch_seed(seed, epoch)
    # reshuffle_each_iteration with a fixed seed draws a new, but reproducible, permutation for each pass.
    records = _records(files, shuffle_seed=base, reshuffle=steps is not None).shuffle(
        shuffle_buffer, seed=base, reshuffle_each_iteration=steps is not None
    )
    if steps is not None:
        records = records.repeat()
    return _parsed_batches(records, info, set_names, batch_size, steps, pass_batches, endless=steps is not None)


def eval_dataset(
    files: Sequence[str],
    info: ExamplesInfo,
    set_names: Sequence[str],
    batch_size: int,
    steps: int | None = None,
    pass_batches: int | None = None,
) -> tf.data.Dataset:
    """The eval split in file order, unshuffled, one pass (or its first ``steps`` batches)."""
    return _parsed_batches(_records(files, shuffle_seed=None), info, set_names, batch_size, steps, pass_batches)


def _parsed_batches(
    records: tf.data.Dataset,
    info: ExamplesInfo,
    set_names: Sequence[str],
    batch_size: int,
    steps: int | None,
    pass_batches: int | None,
    *,
    endless: bool = False,
) -> tf.data.Dataset:
    """Serialized records -> parsed (embedding, {set: label}) batches, cut to ``steps`` and of a declared length.

    ``endless``: the records repeat and an epoch is exactly ``steps`` batches. Otherwise one pass, cut to its
    first ``steps`` batches when given; ``pass_batches`` (the batches in one pass, from ``examples.json``) lets
    Keras show the epoch's length, and a pass of another length fails instead of training on it silently.
    """
    dataset = records.batch(batch_size).map(
        lambda batch: _parse_batch(batch, info.embedding_dim, set_names, info.n_classes),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if steps is not None:
        dataset = dataset.take(steps)
    if endless:
        length = steps
    elif pass_batches is not None:
        length = pass_batches if steps is None else min(steps, pass_batches)
    else:
        length = None
    if length is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(length))
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_records(files: Sequence[str]) -> int:
    """Number of examples in the shards (one cheap pass without parsing)."""
    return int(
        _records(files, shuffle_seed=None).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy()
    )


def split_size(info: ExamplesInfo, files: Sequence[str], split: str) -> int:
    """Examples in a split: from ``examples.json`` when it says (``counts`` or ``n_<split>``), else counted."""
    meta = info.metadata
    for value in ((meta.get("counts") or {}).get(split), meta.get(f"n_{split}")):
        if value is not None:
            return int(value)
    return count_records(files)


def batches_in(n_examples: int, batch_size: int) -> int:
    return -(-int(n_examples) // int(batch_size))


def write_examples_from_arrays(
    examples_dir: str,
    splits: Mapping[str, tuple],
    n_classes: Mapping[str, int],
    sets_checksum: str,
    shards_per_split: int = 2,
) -> None:
    """Write an examples artifact from in-memory arrays, in the layout of ``pipelines.make_examples``.

    For synthetic data (tests, benchmarks): ``splits`` maps ``"train"``/``"eval"`` to
    ``(embeddings [N, D], {set_name: labels [N]})``; rows go round-robin to the shards. The Beam job is the
    production writer; this one exists so the trainer can be exercised without running the pipeline.
    """
    import numpy as np

    from schemas.tfrecord import encode_example

    tf.io.gfile.makedirs(examples_dir)
    embedding_dim = None
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, (embeddings, labels) in splits.items():
        embeddings = np.asarray(embeddings, dtype=np.float32)
        embedding_dim = embeddings.shape[1]
        paths = [
            os.path.join(examples_dir, f"{split}-{i:05d}-of-{shards_per_split:05d}{SHARD_SUFFIX}")
            for i in range(shards_per_split)
        ]
        writers = [tf.io.TFRecordWriter(path, options) for path in paths]
        for row in range(len(embeddings)):
            record = encode_example(
                f"{split}-{row}",
                0.0,
                0.0,
                embeddings[row],
                {name: int(labels[name][row]) for name in n_classes},
            )
            writers[row % shards_per_split].write(record)
        for writer in writers:
            writer.close()
    metadata = {
        "embedding_dim": int(embedding_dim),
        "set_names": list(n_classes),
        "n_classes": {name: int(k) for name, k in n_classes.items()},
        "sets_checksum": sets_checksum,
        "counts": {split: int(len(arrays[0])) for split, arrays in splits.items()},
    }
    with tf.io.gfile.GFile(os.path.join(examples_dir, EXAMPLES_METADATA), "w") as handle:
        handle.write(json.dumps(metadata, indent=2) + "\n")
    with tf.io.gfile.GFile(os.path.join(examples_dir, SUCCESS_MARKER), "w") as handle:
        handle.write("")


def write_sets_json(sets_dir: str, n_classes: Mapping[str, int], checksum: str) -> None:
    """A minimal ``sets.json`` + ``_SUCCESS`` with the keys the trainer reads (for tests and benchmarks)."""
    tf.io.gfile.makedirs(sets_dir)
    document = {
        "format": 1,
        "checksum": checksum,
        "level": 14,
        "sets": [
            {"name": name, "kind": "merge", "n_classes": int(k), "params": {}}
            for name, k in n_classes.items()
        ],
    }
    with tf.io.gfile.GFile(os.path.join(sets_dir, SETS_JSON), "w") as handle:
        handle.write(json.dumps(document, indent=2) + "\n")
    with tf.io.gfile.GFile(os.path.join(sets_dir, SUCCESS_MARKER), "w") as handle:
        handle.write("")
