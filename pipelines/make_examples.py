"""Make training examples: photos with cell + geoclass sets -> sharded GZIP TFRecords, split train/eval.

Input: the ``photos/`` artifact of ``pipelines.bucket_cells`` (``schemas.PHOTOS_WITH_CELL``) and a geoclass-sets
artifact directory (``sets.json`` + ``assignments.parquet``, see docs/ARTIFACTS.md). Each photo gets one label per
set: the class of its cell in that set (looked up for a whole Arrow batch at once). The split is deterministic:
a photo is in ``eval`` when the md5 of its photo_id, read as a number in [0, 1), is below ``--eval_fraction``, so
reruns and other tools (any language with md5) agree on it.

Output directory (completed atomically with ``_SUCCESS``): ``train-SSSSS-of-NNNNN.tfrecord.gz``,
``eval-SSSSS-of-NNNNN.tfrecord.gz`` (``schemas.tfrecord.feature_spec``), ``examples.json`` (embedding_dim,
set_names, n_classes, sets_checksum, counts per split, eval_fraction) and ``OUTPUT.dead_letters/``: rows with a bad
lat/lng or embedding, a repeated photo_id, or a cell that is not a node of the sets (``unknown_cell``).

Run locally:

    python -m pipelines.make_examples --photos out/bucketed/photos --geoclass_sets out/sets --output out/examples

On Dataflow: add ``--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
--setup_file=./setup.py`` and gs:// paths (docs/RUNNERS.md).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from partition_gen import s2cells
from pipelines import common
from schemas import Reason, SchemaError, check_columns
from schemas import columns as c
from schemas.artifacts import SETS_JSON, join, read_sets_json, write_json
from schemas.cli import Parser
from schemas.splits import SPLIT_RULE, held_out
from schemas.tables import PHOTOS_WITH_CELL
from schemas.tfrecord import SPLIT_EVAL, SPLIT_TRAIN, encode_example

JOB = "make_examples"
ASSIGNMENTS = "assignments.parquet"
EXAMPLES_JSON = "examples.json"
DEFAULT_EVAL_FRACTION = 0.1
SPLITS = (SPLIT_TRAIN, SPLIT_EVAL)


@dataclass(frozen=True)
class SetsInfo:
    """What examples need from a geoclass-sets artifact (read from ``sets.json`` only)."""

    path: str
    set_names: tuple[str, ...]
    n_classes: dict
    checksum: str
    level: int


def read_sets_info(path: str) -> SetsInfo:
    """``sets.json`` of a completed geoclass-sets artifact; a clear error if it is incomplete or malformed."""
    path = path.rstrip("/")
    # Marker present and every file as written (an edited assignments.parquet is refused here).
    manifest = read_sets_json(path, full=True)
    try:
        sets = manifest["sets"]
        names = tuple(s["name"] for s in sets)
        n_classes = {s["name"]: int(s["n_classes"]) for s in sets}
        info = SetsInfo(path, names, n_classes, str(manifest["checksum"]), int(manifest["level"]))
    except (KeyError, TypeError, ValueError) as error:
        raise SchemaError(f"geoclass sets {path}/{SETS_JSON}: malformed ({error!r})") from error
    return info


def read_assignments(info: SetsInfo) -> tuple[np.ndarray, np.ndarray]:
    """(ascending node cell ids, labels [n_nodes, n_sets] int32 in ``info.set_names`` order)."""
    with FileSystems.open(FileSystems.join(info.path, ASSIGNMENTS), compression_type="uncompressed") as handle:
        table = pq.read_table(handle)
    missing = [c.class_column(n) for n in info.set_names if c.class_column(n) not in table.column_names]
    if c.CELL_ID not in table.column_names or missing:
        raise SchemaError(f"geoclass sets {info.path}/{ASSIGNMENTS}: missing columns {[c.CELL_ID, *missing]}")
    cells = table.column(c.CELL_ID).to_numpy(zero_copy_only=False).astype(np.uint64)
    labels = np.stack(
        [table.column(c.class_column(n)).to_numpy(zero_copy_only=False).astype(np.int32) for n in info.set_names], axis=1
    )
    order = np.argsort(cells, kind="stable")
    return cells[order], labels[order]


def eval_mask(photo_ids: Sequence[str], eval_fraction: float) -> np.ndarray:
    """True where the photo belongs to the eval split (``schemas.splits``: md5 of the id below the fraction)."""
    return held_out(photo_ids, eval_fraction, digest="md5")


class _LabelAndEncodeFn(beam.DoFn):
    """Batches of photos with cell -> (split, serialized tf.train.Example), or ``unknown_cell`` dead letters."""

    def __init__(self, info: SetsInfo, eval_fraction: float):
        self._info, self._eval_fraction = info, eval_fraction
        self._split_counters = {s: Metrics.counter(JOB, f"{s}_examples") for s in SPLITS}

    def setup(self):
        # Each worker loads the (small) node table once instead of receiving it as a side input.
        self._cells, self._labels = read_assignments(self._info)

    def process(self, batch: pa.RecordBatch) -> Iterator:
        ids = batch.column(c.CELL_ID).to_numpy(zero_copy_only=False).astype(np.uint64)
        pos = np.searchsorted(self._cells, ids)
        known = pos < len(self._cells)
        known[known] = self._cells[pos[known]] == ids[known]
        for i in np.flatnonzero(~known):
            row = common.batch_row(batch, int(i))
            detail = f"cell {int(ids[i])} is not a node of the geoclass sets ({self._info.checksum[:12]})"
            yield beam.pvalue.TaggedOutput(common.DEAD, common.dead_letter(JOB, Reason.UNKNOWN_CELL, detail, row))
        rows = np.flatnonzero(known)
        if rows.size == 0:
            return
        photo_ids = batch.column(c.PHOTO_ID).to_pylist()
        lat = batch.column(c.LAT).to_numpy(zero_copy_only=False)
        lng = batch.column(c.LNG).to_numpy(zero_copy_only=False)
        from pipelines.bucket_cells import embedding_matrix

        embeddings = embedding_matrix(batch)
        labels = self._labels[np.minimum(pos, len(self._cells) - 1)]
        in_eval = eval_mask(photo_ids, self._eval_fraction)
        names = self._info.set_names
        for i in rows:
            split = SPLIT_EVAL if in_eval[i] else SPLIT_TRAIN
            self._split_counters[split].inc()
            example = encode_example(
                photo_ids[i], float(lat[i]), float(lng[i]), embeddings[i], dict(zip(names, labels[i].tolist()))
            )
            yield beam.pvalue.TaggedOutput(split, example)


class MakeExamples(beam.PTransform):
    """Validated photo batches -> outputs ``train`` and ``eval`` (serialized examples) and ``dead_letters``."""

    def __init__(self, info: SetsInfo, eval_fraction: float = DEFAULT_EVAL_FRACTION):
        super().__init__()
        self._info, self._eval_fraction = info, eval_fraction

    def expand(self, batches):
        return batches | "Label and encode examples" >> beam.ParDo(
            _LabelAndEncodeFn(self._info, self._eval_fraction)
        ).with_outputs(SPLIT_TRAIN, SPLIT_EVAL, common.DEAD)


def examples_manifest(info: SetsInfo, embedding_dim: int, eval_fraction: float, summary: common.JobSummary) -> dict:
    return {
        "format": 1,
        "embedding_dim": embedding_dim,
        "set_names": list(info.set_names),
        "n_classes": dict(info.n_classes),
        "sets_checksum": info.checksum,
        "eval_fraction": eval_fraction,
        "split_rule": SPLIT_RULE,
        "counts": {s: summary.counters.get(f"{s}_examples", 0) for s in SPLITS},
    }


def check_level(photos: str, info: SetsInfo) -> None:
    """Refuse photos bucketed at another S2 level than the sets' nodes (every photo would be an unknown cell)."""
    first = common.list_table_files(photos, common.TABLE_SUFFIXES)[0]
    unit = (0, first, 0 if first.endswith(".parquet") else None, 0)
    for batch in common.read_unit_batches(unit, [c.CELL_ID]):
        level = int(s2cells.cell_levels(batch.column(c.CELL_ID).to_numpy(zero_copy_only=False)[:1])[0])
        if level != info.level:
            raise SchemaError(
                f"photos {photos} are bucketed at S2 level {level} but geoclass sets {info.path} have level {info.level}"
            )
        return


def build_pipeline(
    pipeline: beam.Pipeline,
    photos: str,
    info: SetsInfo,
    examples_dir: str,
    dead_letters_dir: str,
    embedding_dim: int,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    train_shards: int = 0,
    eval_shards: int = 0,
) -> None:
    columns = [c.PHOTO_ID, c.LAT, c.LNG, c.EMBEDDING, c.CELL_ID]
    batches = pipeline | "Read photos with cell" >> common.ReadTableBatches(photos, JOB, columns)
    checked = batches | "Validate photos" >> common.ValidateBatches(JOB, embedding_dim, need_embedding=True)
    unique = checked[common.VALID] | "Drop repeated photo ids" >> common.DropDuplicatePhotoIds(JOB)
    examples = unique[common.VALID] | "Make examples" >> MakeExamples(info, eval_fraction)
    book = common.ledger(pipeline)
    for split, shards in ((SPLIT_TRAIN, train_shards), (SPLIT_EVAL, eval_shards)):
        counted = examples[split] | f"Count {split} examples" >> common.CountRowsOut(JOB)
        book.tally(f"{split}_examples", counted, f"Tally {split} examples")
        _ = book.written(
            counted
            | f"Write {split} shards"
            >> beam.io.WriteToTFRecord(
                FileSystems.join(examples_dir, split),
                file_name_suffix=".tfrecord.gz",
                num_shards=shards,
                shard_name_template="-SSSSS-of-NNNNN",
                compression_type=beam.io.filesystem.CompressionTypes.GZIP,
            )
        )
    dead = (checked[common.DEAD], unique[common.DEAD], examples[common.DEAD])
    _ = dead | "Write dead letters" >> common.WriteDeadLetters(dead_letters_dir, JOB)


def run(argv: Sequence[str] | None = None) -> common.JobSummary | None:
    args, options = common.parse_job_args(parser(), argv)
    return launch(args, options)


def parser() -> argparse.ArgumentParser:
    """The job's flags, declared once (``run`` parses argv with it, ``run_all`` fills it through ``job_args``)."""
    parser = Parser(prog="pipelines.make_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, type=common.path_flag,
                        help="photos-with-cell artifact (bucket_cells OUT/photos)")
    parser.add_argument("--geoclass_sets", required=True, type=common.path_flag, help="geoclass-sets artifact directory")
    parser.add_argument("--output", required=True, type=common.path_flag, help="examples directory")
    parser.add_argument("--dead_letters", default=None, type=common.path_flag, help="default: OUTPUT.dead_letters")
    parser.add_argument("--eval_fraction", type=float, default=DEFAULT_EVAL_FRACTION)
    parser.add_argument("--train_shards", type=int, default=0, help="0: the runner decides")
    parser.add_argument("--eval_shards", type=int, default=0, help="0: the runner decides")
    parser.add_argument("--embedding_dim", type=int, default=None, help="default: the first embedding's length")
    return common.add_job_flags(parser)


def launch(args: argparse.Namespace, options) -> common.JobSummary | None:
    """Build and run the job from typed arguments (``parser()``'s flags) and ``PipelineOptions``."""
    if not 0.0 <= args.eval_fraction <= 1.0:
        from schemas.cli import UsageError

        raise UsageError(f"--eval_fraction must be in [0, 1], got {args.eval_fraction}")
    check_columns("photos", common.table_schema(args.photos), PHOTOS_WITH_CELL)
    info = read_sets_info(args.geoclass_sets)
    check_level(args.photos, info)
    if args.embedding_dim is None:
        from pipelines.bucket_cells import infer_embedding_dim

        args.embedding_dim = infer_embedding_dim(args.photos)
    output = args.output.rstrip("/")
    examples = common.StagedOutput(output)
    dead_letters = common.StagedOutput(args.dead_letters or f"{output}.dead_letters")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        args.photos,
        info,
        examples.path,
        dead_letters.path,
        args.embedding_dim,
        args.eval_fraction,
        args.train_shards,
        args.eval_shards,
    )

    write_manifest = functools.partial(_write_manifest, examples.path, info, args.embedding_dim, args.eval_fraction)
    return common.run_job(pipeline, JOB, [examples, dead_letters], before_commit=write_manifest, args=args)


def _write_manifest(directory: str, info: SetsInfo, embedding_dim: int, eval_fraction: float,
                    summary: common.JobSummary) -> None:
    """``examples.json`` with the counts of this run, written into the staging folder before the commit."""
    write_json(join(directory, EXAMPLES_JSON), examples_manifest(info, embedding_dim, eval_fraction, summary))


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.make_examples")
