"""Bucket photos into S2 cells: features -> per-photo cell id and per-cell aggregates.

Input: a features artifact (``schemas.FEATURES``: a completed directory, Parquet/CSV files or a glob, local or
``gs://``). Each Arrow batch gets its level-14 (``--level``) S2 cell ids from the vectorized core in one call; each
batch is reduced to partial per-cell sums (image count, xyz sum for the image-weighted centre, float64 feature
sum for the mean feature) sharded by a hash of the cell id; ``CellAggregateFn`` merges the partials across
batches and workers, so per-row work never passes through Python one row at a time. Before committing, the job
checks that the cells hold exactly the photos it wrote (counter ``cell_images`` = ``rows_out``).

Outputs (each completed atomically with ``_SUCCESS``):
- ``OUT/cells/``   ``schemas.CELLS``, one row per non-empty cell (``level`` = the level used);
- ``OUT/photos/``  ``schemas.PHOTOS_WITH_CELL``, every valid photo with its cell id;
- ``OUT/dead_letters/``  rows with bad lat/lng, a missing/NaN/wrongly sized embedding or a repeated photo_id.

Run locally (offline; add `--direct_num_workers=2 --direct_running_mode=multi_processing` for two processes):

    python -m pipelines.bucket_cells --features out/features --output out/bucketed

On Dataflow (see docs/RUNNERS.md):

    python -m pipelines.bucket_cells --features gs://B/features --output gs://B/bucketed \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \\
        --setup_file=./setup.py --cell_shards=256
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from partition_gen.cells import CellPartial, cells_table, merge_partials, reduce_by_cell
from partition_gen.geo import latlng_to_xyz
from partition_gen.s2cells import latlng_to_cell_ids
from pipelines import common
from schemas import CELLS, PHOTOS_WITH_CELL, SchemaError
from schemas import columns as c
from schemas.cli import Parser

JOB = "bucket_cells"
DEFAULT_LEVEL = 14
DEFAULT_CELL_SHARDS = 16
# Pending partials an accumulator holds before reducing them: bounds memory without re-sorting per input.
_COMPACT_EVERY = 16


def embedding_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """The batch's (validated, equal-length) embeddings as an (n, D) float32 array, without a per-row loop."""
    column = batch.column(c.EMBEDDING)
    if batch.num_rows == 0:
        return np.zeros((0, 0), np.float32)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(batch.num_rows, -1)


def with_cell_ids(batch: pa.RecordBatch, level: int) -> pa.RecordBatch:
    """The batch plus its ``cell_id`` column, computed for the whole batch in one vectorized call."""
    lat = batch.column(c.LAT).to_numpy(zero_copy_only=False)
    lng = batch.column(c.LNG).to_numpy(zero_copy_only=False)
    ids = latlng_to_cell_ids(lat, lng, level=level)
    return batch.append_column(c.CELL_ID, pa.array(ids, type=pa.uint64()))


def shard_of_cells(cell_ids: np.ndarray, n_shards: int) -> np.ndarray:
    """A stable shard per cell (multiplicative hash of the id), spreading neighbouring cells over shards."""
    mixed = (cell_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return (mixed % np.uint64(n_shards)).astype(np.int64)


def batch_partials(batch: pa.RecordBatch, n_shards: int) -> Iterator[tuple[int, CellPartial]]:
    """(shard, per-cell partial sums) of one batch that already has its cell ids."""
    if batch.num_rows == 0:
        return
    ids = batch.column(c.CELL_ID).to_numpy(zero_copy_only=False)
    xyz = latlng_to_xyz(
        batch.column(c.LAT).to_numpy(zero_copy_only=False), batch.column(c.LNG).to_numpy(zero_copy_only=False)
    )
    partial = reduce_by_cell(ids, np.ones(len(ids), np.int64), xyz, embedding_matrix(batch))
    shards = shard_of_cells(partial.cell_ids, n_shards)
    # One stable sort by shard keeps ids ascending inside each shard; the shards are then contiguous slices.
    order = np.argsort(shards, kind="stable")
    shards = shards[order]
    bounds = np.flatnonzero(np.concatenate(([True], shards[1:] != shards[:-1], [True])))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = order[lo:hi]
        yield int(shards[lo]), CellPartial(
            partial.cell_ids[rows], partial.counts[rows], partial.xyz[rows], partial.features[rows]
        )


class CellAggregateFn(beam.CombineFn):
    """Merges per-cell partial sums; the accumulator is a list of partials reduced every few inputs."""

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, partial):
        accumulator.append(partial)
        if len(accumulator) >= _COMPACT_EVERY:
            accumulator[:] = [merge_partials(accumulator)]
        return accumulator

    def merge_accumulators(self, accumulators):
        return [merge_partials([p for acc in accumulators for p in acc])]

    def compact(self, accumulator):
        return [merge_partials(accumulator)]

    def extract_output(self, accumulator):
        return merge_partials(accumulator)


CELL_IMAGES = "cell_images"


def _shard_cells_table(shard_and_partial: tuple[int, CellPartial], level: int, counter) -> pa.Table:
    partial = shard_and_partial[1]
    counter.inc(int(partial.counts.sum()))
    return cells_table(partial, level)


def _cell_images(table: pa.Table) -> tuple[str, int]:
    return CELL_IMAGES, int(pc.sum(table.column(c.N_IMAGES)).as_py() or 0)


def check_cells_cover_photos(summary: common.JobSummary) -> None:
    """Every photo written must be counted in exactly one cell: a cross-check of the two outputs."""
    cell_images = summary.counters.get(CELL_IMAGES, 0)
    if cell_images != summary.rows_out:
        raise common.UnbalancedJobError(
            f"{JOB}: cells hold {cell_images} images but {summary.rows_out} photos were written; not committed"
        )


class AssignCells(beam.PTransform):
    """Valid feature batches -> the same batches with a ``cell_id`` column."""

    def __init__(self, level: int = DEFAULT_LEVEL):
        super().__init__()
        self._level = level

    def expand(self, batches):
        return batches | f"Find each photo's level-{self._level} cell" >> beam.Map(with_cell_ids, self._level)


class AggregateCells(beam.PTransform):
    """Batches with cell ids -> one ``schemas.CELLS`` table per cell shard (cells in ascending id order)."""

    def __init__(self, level: int = DEFAULT_LEVEL, n_shards: int = DEFAULT_CELL_SHARDS):
        super().__init__()
        self._level, self._n_shards = level, n_shards

    def expand(self, batches):
        return (
            batches
            | "Sum each batch by cell" >> beam.FlatMap(batch_partials, self._n_shards)
            | "Merge cell sums across batches" >> beam.CombinePerKey(CellAggregateFn())
            | "Make the cells table" >> beam.Map(_shard_cells_table, self._level, Metrics.counter(JOB, CELL_IMAGES))
        )


class BucketPhotos(beam.PTransform):
    """Feature batches -> outputs ``photos`` (batches with cell ids), ``cells`` (CELLS tables), ``dead_letters``.

    ``key_batches``: a second read of the same input for the duplicate check, so the main batches stream
    straight through to the outputs instead of waiting, materialized, for the list of repeated photo ids.
    """

    def __init__(
        self,
        embedding_dim: int | None,
        level: int = DEFAULT_LEVEL,
        n_shards: int = DEFAULT_CELL_SHARDS,
        key_batches=None,
    ):
        super().__init__()
        self._dim, self._level, self._n_shards = embedding_dim, level, n_shards
        self._key_batches = key_batches

    def expand(self, batches):
        checked = batches | "Validate photos" >> common.ValidateBatches(JOB, self._dim, need_embedding=True)
        if self._key_batches is None:
            unique = checked[common.VALID] | "Drop repeated photo ids" >> common.DropDuplicatePhotoIds(JOB)
        else:
            repeats = self._key_batches | "Find repeated photo ids" >> common.FindRepeatedPhotoIds(
                validate_with=(self._dim, True)
            )
            unique = checked[common.VALID] | "Drop repeated photo ids" >> common.DropRepeatedPhotoIds(JOB, repeats)
        photos = unique[common.VALID] | AssignCells(self._level)
        cells = photos | AggregateCells(self._level, self._n_shards)
        dead = (checked[common.DEAD], unique[common.DEAD]) | "Gather dead letters" >> beam.Flatten()
        return {"photos": photos, "cells": cells, common.DEAD: dead}


def infer_embedding_dim(features_path: str) -> int:
    """The length of the first non-empty embedding of the input (the dimension every row must share)."""
    first = common.list_table_files(features_path, common.TABLE_SUFFIXES)[0]
    for batch in common.read_unit_batches((0, first, 0 if first.endswith(".parquet") else None, 0), [c.EMBEDDING]):
        lengths = pc.list_value_length(batch.column(c.EMBEDDING)).drop_null().to_numpy(zero_copy_only=False)
        if len(lengths):
            return int(lengths[0])
    raise SchemaError(f"{features_path}: no row has an embedding, so the job has nothing to bucket")


def build_pipeline(
    pipeline: beam.Pipeline,
    features: str,
    cells_dir: str,
    photos_dir: str,
    dead_letters_dir: str,
    level: int = DEFAULT_LEVEL,
    embedding_dim: int | None = None,
    n_shards: int = DEFAULT_CELL_SHARDS,
    batch_rows: int = common.DEFAULT_BATCH_ROWS,
) -> None:
    """Read features, bucket them, write the three outputs into the given (staging) directories."""
    from schemas import check_columns
    from schemas.tables import FEATURES

    check_columns(f"--features {features}", common.table_schema(features), FEATURES)
    if embedding_dim is None:
        embedding_dim = infer_embedding_dim(features)
    columns = [c.PHOTO_ID, c.LAT, c.LNG, c.EMBEDDING]
    batches = pipeline | "Read features" >> common.ReadTableBatches(features, JOB, columns, batch_rows)
    key_batches = pipeline | "Read features again for the duplicate check" >> common.ReadTableBatches(
        features, JOB, columns, batch_rows, count_rows_in=False
    )
    out = batches | "Bucket photos into cells" >> BucketPhotos(embedding_dim, level, n_shards, key_batches)
    _ = (
        out["photos"]
        | common.CountRowsOut(JOB)
        | "Write photos with cell" >> common.WriteBatchesToParquet(photos_dir, PHOTOS_WITH_CELL)
    )
    book = common.ledger(pipeline)
    book.tally_by(out["cells"], _cell_images, "Tally the images in the cells")
    book.written(
        out["cells"]
        | "Write cells"
        >> beam.io.WriteToParquetBatched(
            beam.io.filesystems.FileSystems.join(cells_dir, "part"),
            schema=CELLS,
            codec="snappy",
            file_name_suffix=".parquet",
        )
    )
    _ = out[common.DEAD] | "Write dead letters" >> common.WriteDeadLetters(dead_letters_dir, JOB)


def parser() -> argparse.ArgumentParser:
    """The job's flags, declared once (``run`` parses argv with it, ``run_all`` fills it through ``job_args``)."""
    p = Parser(prog="pipelines.bucket_cells", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True, type=common.path_flag, help="features artifact: directory, file or glob")
    p.add_argument("--output", required=True, type=common.path_flag,
                   help="writes OUTPUT/cells, OUTPUT/photos, OUTPUT/dead_letters")
    p.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="S2 level of the cells (default 14)")
    p.add_argument("--embedding_dim", type=int, default=None, help="default: the first embedding's length")
    p.add_argument("--cell_shards", type=int, default=DEFAULT_CELL_SHARDS, help="parallelism of the cell sums (default 16)")
    p.add_argument("--batch_rows", type=int, default=common.DEFAULT_BATCH_ROWS,
                   help=f"rows per Arrow batch read (default {common.DEFAULT_BATCH_ROWS})")
    return common.add_job_flags(p)


def launch(args: argparse.Namespace, options) -> common.JobSummary | None:
    """Build and run the job from typed arguments (``parser()``'s flags) and ``PipelineOptions``."""
    if not 0 <= args.level <= 30:
        from schemas.cli import UsageError

        raise UsageError(f"--level must be in 0..30, got {args.level}")
    join = beam.io.filesystems.FileSystems.join
    outputs = {name: common.StagedOutput(join(args.output, name)) for name in ("cells", "photos", "dead_letters")}
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        args.features,
        outputs["cells"].path,
        outputs["photos"].path,
        outputs["dead_letters"].path,
        level=args.level,
        embedding_dim=args.embedding_dim,
        n_shards=args.cell_shards,
        batch_rows=args.batch_rows,
    )
    return common.run_job(
        pipeline, JOB, [outputs["photos"], outputs["cells"], outputs["dead_letters"]],
        checks=[check_cells_cover_photos], args=args,
    )


def run(argv: Sequence[str] | None = None) -> common.JobSummary | None:
    args, options = common.parse_job_args(parser(), argv)
    return launch(args, options)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.bucket_cells")
