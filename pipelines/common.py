"""Shared plumbing of every Beam job: options, table reading, validation, dead letters, summary, atomic outputs.

The API, in the order a job uses it:

- ``parse_job_args(parser, argv)`` -> (known args, ``PipelineOptions``) with offline defaults: the
  ``FnApiRunner`` (the engine the DirectRunner itself falls back to; ``--runner=DirectRunner`` is mapped to it
  because Beam >= 2.68's DirectRunner first tries to download the Prism binary), one in-process worker by
  default, two worker processes with ``parallel=True`` or ``--direct_num_workers=2
  --direct_running_mode=multi_processing`` (see ``offline_pipeline_args`` for the measurements behind this).
  Any other ``--runner`` (DataflowRunner, FlinkRunner, PortableRunner, PrismRunner) is passed through untouched.
- ``ReadTableBatches(path, job)``: CSV or Parquet files, a glob, or a completed artifact directory (local or
  ``gs://``, through ``FileSystems``) -> a PCollection of Arrow ``RecordBatch``es with canonical column types and
  the internal ``ROW_KEY`` column; counts ``rows_in``.
- ``ValidateBatches(job, embedding_dim, need_embedding)``: vectorized pre-check, ``schemas.row_problem`` on the
  suspicious rows -> outputs ``valid`` (batches) and ``dead_letters`` (``schemas.DEAD_LETTERS`` dicts).
  ``ValidateRows`` is the same for PCollections of dict rows.
- ``DropDuplicatePhotoIds(job)``: keeps the first occurrence of each photo_id (lowest ``ROW_KEY``: earliest file in
  sorted order, then earliest row) and sends the others to the dead letters. For big inputs,
  ``FindRepeatedPhotoIds(validate_with=...)`` on a second read + ``DropRepeatedPhotoIds`` keep the main batches
  streaming instead of waiting materialized for the side input (``bucket_cells`` does this).
- ``CountRowsOut(job)``, ``WriteBatchesToParquet(directory)``, ``WriteDeadLetters(directory, job)`` (the single place
  that counts dead letters by reason).
- ``StagedOutput(final_dir)`` + ``run_job(pipeline, job, outputs)``: run, check rows in = rows out + dead letters,
  then (optional ``before_commit(summary)`` hook for manifests and cross-checks) move each staged directory into
  place with its ``_SUCCESS`` marker and log one summary line. Any failure before that removes the staging dirs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines import progress
from schemas import DEAD_LETTERS, EMBEDDING_TYPE, Reason, row_problem
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, is_remote, replace_directory_atomic

LOG = logging.getLogger(__name__)

ROWS_IN = "rows_in"
ROWS_OUT = "rows_out"
VALID = "valid"
DEAD = "dead_letters"

OFFLINE_RUNNER = "FnApiRunner"
_DIRECT_RUNNER_NAMES = {"directrunner", "direct", "switchingdirectrunner"}
DEFAULT_BATCH_ROWS = 65_536
# ROW_KEY = file ordinal << 40 | row in file: 2**40 rows per file, 2**23 files per input.
_ROW_BITS = 40

# Canonical Arrow types of the columns jobs read; anything else passes through unchanged.
_CANONICAL_TYPES = {
    c.PHOTO_ID: pa.string(),
    c.LAT: pa.float64(),
    c.LNG: pa.float64(),
    c.IMAGE_URI: pa.string(),
    c.EMBEDDING: EMBEDDING_TYPE,
    c.CELL_ID: pa.uint64(),
}


# ----------------------------------------------------------------------------------------------- options


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def offline_pipeline_args(pipeline_args: Sequence[str] = (), parallel: bool = False) -> list[str]:
    """``pipeline_args`` with the offline runner defaults filled in where the caller set nothing.

    Default: one in-process worker. The hot paths are NumPy/Arrow/TensorFlow calls that use more than one core
    by themselves, batches never leave the process, and on the 2-core reference machine this was the fastest
    mode for ``bucket_cells`` (1M photos: as fast as two threads, 2-3x faster than two processes).
    ``parallel`` asks for two SDK worker processes (``multi_processing``): isolated workers, but every batch
    crosses the gRPC data plane. Two worker *threads* (``multi_threading``) are not used: in repeated
    1M-photo runs they lost combiner partials about one run in four (the Beam 2.77 FnApiRunner; caught by
    ``bucket_cells``' cells-vs-photos cross-check), while one worker and two processes never did.
    """
    args = list(pipeline_args)
    runner = _flag_value(args, "--runner")
    if runner is None or runner.lower() in _DIRECT_RUNNER_NAMES:
        args = [a for i, a in enumerate(args) if not _is_runner_arg(args, i)]
        args.append(f"--runner={OFFLINE_RUNNER}")
        if runner is not None:
            LOG.info("running --runner=%s as %s (same engine, no Prism download)", runner, OFFLINE_RUNNER)
        runner = OFFLINE_RUNNER
    if runner == OFFLINE_RUNNER:
        if not _has_flag(args, "--direct_num_workers"):
            args.append(f"--direct_num_workers={2 if parallel else 1}")
        if not _has_flag(args, "--direct_running_mode"):
            args.append(f"--direct_running_mode={'multi_processing' if parallel else 'in_memory'}")
    return args


def _is_runner_arg(args: Sequence[str], i: int) -> bool:
    a = args[i]
    if a.startswith("--runner="):
        return True
    if a == "--runner":
        return True
    return i > 0 and args[i - 1] == "--runner"


def pipeline_options(pipeline_args: Sequence[str] = (), parallel: bool = False) -> PipelineOptions:
    """``PipelineOptions`` from leftover command-line flags, with the offline defaults."""
    return PipelineOptions(offline_pipeline_args(pipeline_args, parallel=parallel))


def parse_job_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, parallel: bool = False
) -> tuple[argparse.Namespace, PipelineOptions]:
    """Split ``argv`` into the job's own flags and ``PipelineOptions`` (runner flags etc.), the same way for every job."""
    known, rest = parser.parse_known_args(argv)
    return known, pipeline_options(rest, parallel=parallel)


def local_pipeline(extra_args: Sequence[str] = (), parallel: bool = False) -> beam.Pipeline:
    """An offline pipeline for tests and notebooks (in-process unless ``parallel``)."""
    return beam.Pipeline(options=pipeline_options(extra_args, parallel=parallel))


# ----------------------------------------------------------------------------------------------- reading


def _is_table_file(path: str) -> bool:
    return path.endswith((".parquet", ".csv", ".csv.gz"))


def list_table_files(path: str) -> list[str]:
    """The CSV/Parquet files of an input: one file, a glob, or a directory artifact completed by ``_SUCCESS``.

    Raises ``FileNotFoundError`` / ``schemas.io.IncompleteArtifactError`` at launch, before any worker starts.
    """
    from schemas.io import IncompleteArtifactError

    if any(ch in path for ch in "*?["):
        files = [m.path for r in FileSystems.match([path]) for m in r.metadata_list]
        files = sorted(f for f in files if _is_table_file(f))
        if not files:
            raise FileNotFoundError(f"no .csv or .parquet files match {path}")
        return files
    if _is_table_file(path):
        if not FileSystems.exists(path):
            raise FileNotFoundError(f"input table {path} does not exist")
        return [path]
    directory = path.rstrip("/")
    if not FileSystems.exists(FileSystems.join(directory, SUCCESS_MARKER)):
        if not FileSystems.exists(directory) and not is_remote(directory):
            raise FileNotFoundError(f"input {path} does not exist")
        raise IncompleteArtifactError(f"{path}: no {SUCCESS_MARKER} marker; the job that writes it did not finish")
    matches = FileSystems.match([FileSystems.join(directory, "*")])[0].metadata_list
    files = sorted(m.path for m in matches if _is_table_file(m.path))
    if not files:
        raise FileNotFoundError(f"{path}: no .csv or .parquet files in the artifact")
    return files


def _csv_string_columns() -> dict:
    # Read our columns as text and convert them ourselves, so one unparseable value is one dead letter,
    # not a failed read of the whole file.
    return {name: pa.string() for name in (c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI, c.EMBEDDING)}


def _to_float_or_none(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _parse_embedding_text(text: str | None) -> list | None:
    """A CSV embedding cell: a JSON list or numbers separated by commas/spaces; a value that is not a number
    becomes NaN so the row is rejected as ``nan_embedding`` with its length intact."""
    if text is None or text.strip() == "":
        return None
    values = []
    for token in text.strip().strip("[]").replace(",", " ").split():
        try:
            values.append(float(token))
        except ValueError:
            values.append(math.nan)
    return values


def normalize_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast the known columns to their canonical types (text lat/lng/embedding from CSV included).

    Unparseable lat/lng become null (-> ``missing_latlng``); unparseable embedding values become NaN
    (-> ``nan_embedding``), so validation names the problem.
    """
    arrays, names = [], []
    for name, column in zip(batch.schema.names, batch.columns):
        want = _CANONICAL_TYPES.get(name)
        if want is not None and column.type != want:
            if name in (c.LAT, c.LNG) and pa.types.is_string(column.type):
                column = pa.array([_to_float_or_none(v) for v in column.to_pylist()], type=pa.float64())
            elif name == c.EMBEDDING and pa.types.is_string(column.type):
                column = pa.array([_parse_embedding_text(v) for v in column.to_pylist()], type=EMBEDDING_TYPE)
            elif name == c.PHOTO_ID and not pa.types.is_string(column.type):
                column = pc.cast(column, pa.string())
            else:
                column = column.cast(want)
        arrays.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _parquet_units(ordinal_and_path: tuple[int, str]) -> Iterator[tuple[int, str, int | None, int]]:
    """Split one input file into read units: (ordinal, path, row group or None for a whole CSV, first row)."""
    ordinal, path = ordinal_and_path
    if not path.endswith(".parquet"):
        yield ordinal, path, None, 0
        return
    with FileSystems.open(path) as handle:
        meta = pq.ParquetFile(handle).metadata
    first = 0
    for group in range(meta.num_row_groups):
        yield ordinal, path, group, first
        first += meta.row_group(group).num_rows


def read_unit_batches(
    unit: tuple[int, str, int | None, int], columns: Sequence[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Normalized batches of one read unit, each with its ``ROW_KEY`` column."""
    ordinal, path, group, first_row = unit
    with FileSystems.open(path) as handle:
        if group is None:
            reader = pacsv.open_csv(
                handle,
                read_options=pacsv.ReadOptions(block_size=16 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types=_csv_string_columns(),
                    include_columns=list(columns) if columns else None,
                    strings_can_be_null=True,
                    # Only an empty cell is missing: a literal "nan" must reach validation as NaN.
                    null_values=[""],
                ),
            )
            batches: Iterable[pa.RecordBatch] = reader
        else:
            parquet = pq.ParquetFile(handle)
            present = [n for n in columns if n in parquet.schema_arrow.names] if columns else None
            batches = parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=present)
        row = first_row
        for batch in batches:
            if batch.num_rows == 0:
                continue
            batch = normalize_batch(batch)
            keys = (np.int64(ordinal) << np.int64(_ROW_BITS)) + np.arange(row, row + batch.num_rows, dtype=np.int64)
            row += batch.num_rows
            yield batch.append_column(c.ROW_KEY, pa.array(keys, type=pa.int64()))


def table_schema(path: str) -> pa.Schema:
    """The normalized schema of an input's first file (for validating columns at launch)."""
    first = list_table_files(path)[0]
    with FileSystems.open(first) as handle:
        if first.endswith(".parquet"):
            schema = pq.ParquetFile(handle).schema_arrow
        else:
            header = pacsv.open_csv(
                handle, convert_options=pacsv.ConvertOptions(column_types=_csv_string_columns())
            ).schema
            schema = pa.schema([pa.field(n, _CANONICAL_TYPES.get(n, header.field(n).type)) for n in header.names])
    return pa.schema([pa.field(f.name, _CANONICAL_TYPES.get(f.name, f.type)) for f in schema])


def row_file_and_index(row_key: int) -> tuple[int, int]:
    """(input file ordinal, row within that file) of a ``ROW_KEY``."""
    return int(row_key) >> _ROW_BITS, int(row_key) & ((1 << _ROW_BITS) - 1)


class ReadTableBatches(beam.PTransform):
    """CSV/Parquet input -> normalized Arrow RecordBatches with ``ROW_KEY``; counts ``rows_in``.

    Files are listed at construction (a missing input fails at launch with a clear error); Parquet files are
    read one row group per element so workers share a large file.
    """

    def __init__(
        self,
        path: str,
        job: str,
        columns: Sequence[str] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        count_rows_in: bool = True,
    ):
        super().__init__()
        self._files = list_table_files(path)
        self._job = job
        self._columns = list(columns) if columns else None
        self._batch_rows = batch_rows
        self._count = count_rows_in

    def expand(self, pbegin):
        columns, batch_rows, job = self._columns, self._batch_rows, self._job
        # A second read of the same input (e.g. for the duplicate check) must not count its rows again.
        rows_in = Metrics.counter(self._job, ROWS_IN) if self._count else None

        def read(unit):
            for batch in read_unit_batches(unit, columns, batch_rows):
                if rows_in is not None:
                    rows_in.inc(batch.num_rows)
                    progress.advance(job, "read", batch.num_rows)
                yield batch

        return (
            pbegin
            | "List the input files" >> beam.Create(list(enumerate(self._files)))
            | "Split files into row groups" >> beam.FlatMap(_parquet_units)
            | "Spread row groups over workers" >> beam.Reshuffle()
            | "Read row groups as Arrow batches" >> beam.FlatMap(read)
        )


# ----------------------------------------------------------------------------------------------- dead letters


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def dead_letter(job: str, reason: str, detail: str, row: dict | None) -> dict:
    """One ``schemas.DEAD_LETTERS`` row; ``record`` is the original row as JSON so it can be fixed and replayed."""
    row = {k: _jsonable(v) for k, v in (row or {}).items() if k != c.ROW_KEY}
    photo_id = row.get(c.PHOTO_ID)
    return {
        c.JOB: job,
        c.REASON: reason,
        c.DETAIL: detail,
        c.PHOTO_ID: None if photo_id is None else str(photo_id),
        c.RECORD: json.dumps(row, default=str),
    }


def batch_row(batch: pa.RecordBatch, index: int) -> dict:
    return batch.slice(index, 1).to_pylist()[0]


def suspicious_rows(
    batch: pa.RecordBatch, embedding_dim: int | None = None, need_embedding: bool = False, need_location: bool = True
) -> np.ndarray:
    """Boolean mask of rows that may have a problem: a vectorized superset of ``schemas.row_problem``.

    Only these rows pay for the per-row check, so 30M clean photos never go through Python one by one.
    """
    n = batch.num_rows
    names = batch.schema.names
    bad = np.zeros(n, dtype=bool)
    if c.PHOTO_ID in names:
        ids = batch.column(c.PHOTO_ID)
        bad |= pc.fill_null(pc.equal(pc.cast(ids, pa.string()), ""), True).to_numpy(zero_copy_only=False)
    else:
        bad[:] = True
    for name, limit in ((c.LAT, 90.0), (c.LNG, 180.0)) if need_location else ():
        if name not in names:
            bad[:] = True
            continue
        values = batch.column(name)
        if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
            bad[:] = True
            continue
        arr = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        with np.errstate(invalid="ignore"):
            bad |= ~(np.abs(arr) <= limit)
    if c.EMBEDDING in names:
        emb = batch.column(c.EMBEDDING)
        null = emb.is_null().to_numpy(zero_copy_only=False)
        if need_embedding:
            bad |= null
        lengths = pc.fill_null(pc.list_value_length(emb), 0).to_numpy(zero_copy_only=False)
        if embedding_dim is not None:
            bad |= ~null & (lengths != embedding_dim)
        flat = pc.list_flatten(emb)
        if len(flat) and flat.null_count == 0 and pa.types.is_floating(flat.type) and (lengths == lengths[0]).all():
            # The common case (equal lengths, no nulls): one reshape, no per-value bookkeeping.
            values = flat.to_numpy(zero_copy_only=False).reshape(n, -1)
            bad |= ~np.isfinite(values).all(axis=1)
        elif len(flat):
            finite = pc.fill_null(pc.is_finite(pc.cast(flat, pa.float64())), False).to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(emb).to_numpy(zero_copy_only=False)
            bad |= np.bincount(parents[~finite], minlength=n) > 0
    elif need_embedding:
        bad[:] = True
    return bad


def row_problems(
    batch: pa.RecordBatch, embedding_dim: int | None = None, need_embedding: bool = False, need_location: bool = True
) -> dict[int, tuple[str, str]]:
    """{row index: (reason, detail)} of the batch's rows that ``schemas.row_problem`` rejects."""
    problems = {}
    for i in np.flatnonzero(suspicious_rows(batch, embedding_dim, need_embedding, need_location)):
        row = batch_row(batch, int(i))
        problem = row_problem(row, embedding_dim, need_embedding=need_embedding, need_location=need_location)
        if problem is not None:
            problems[int(i)] = problem
    return problems


class _ValidateBatchesFn(beam.DoFn):
    def __init__(self, job: str, embedding_dim: int | None, need_embedding: bool, need_location: bool = True):
        self._job, self._dim, self._need = job, embedding_dim, need_embedding
        self._need_location = need_location

    def process(self, batch: pa.RecordBatch):
        problems = row_problems(batch, self._dim, self._need, self._need_location)
        if not problems:
            yield batch
            return
        keep = np.ones(batch.num_rows, dtype=bool)
        for i, (reason, detail) in problems.items():
            keep[i] = False
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(self._job, reason, detail, batch_row(batch, i)))
        if keep.any():
            yield batch.filter(pa.array(keep))


class ValidateBatches(beam.PTransform):
    """RecordBatches -> outputs ``valid`` (clean batches) and ``dead_letters`` (rows failing ``row_problem``)."""

    def __init__(
        self, job: str, embedding_dim: int | None = None, need_embedding: bool = False, need_location: bool = True
    ):
        super().__init__()
        self._fn = _ValidateBatchesFn(job, embedding_dim, need_embedding, need_location)

    def expand(self, batches):
        return batches | "Check every row" >> beam.ParDo(self._fn).with_outputs(DEAD, main=VALID)


class _ValidateRowsFn(_ValidateBatchesFn):
    def process(self, row: dict):
        problem = row_problem(row, embedding_dim=self._dim, need_embedding=self._need)
        if problem is None:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(self._job, problem[0], problem[1], row))


class ValidateRows(beam.PTransform):
    """Dict rows -> outputs ``valid`` and ``dead_letters``; for jobs whose elements are single rows."""

    def __init__(self, job: str, embedding_dim: int | None = None, need_embedding: bool = False):
        super().__init__()
        self._fn = _ValidateRowsFn(job, embedding_dim, need_embedding)

    def expand(self, rows):
        return rows | "Check every row" >> beam.ParDo(self._fn).with_outputs(DEAD, main=VALID)


# ----------------------------------------------------------------------------------------------- duplicates


def stable_photo_hash(photo_ids: Sequence[str] | np.ndarray, salt: str = "0123456789123456") -> np.ndarray:
    """uint64 hash of photo ids, identical in every process and run (unlike Python's salted ``hash``)."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(photo_ids, dtype=object), hash_key=salt)


def stable_fraction(photo_id: str) -> float:
    """A photo id's stable position in [0, 1) (md5), e.g. for a train/eval split."""
    digest = hashlib.md5(photo_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _fingerprints_by_bucket(batch: pa.RecordBatch, n_buckets: int, validate_with: tuple | None):
    if validate_with is not None:
        problems = row_problems(batch, *validate_with)
        if problems:
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[list(problems)] = False
            batch = batch.filter(pa.array(keep))
    if batch.num_rows == 0:
        return
    ids = batch.column(c.PHOTO_ID).to_numpy(zero_copy_only=False)
    # Two independent 64-bit hashes stand in for the id: a false match needs a 128-bit collision, and
    # shuffling two uint64 arrays is far cheaper than shuffling strings.
    first, second = stable_photo_hash(ids), stable_photo_hash(ids, salt="cplanet-photo-id")
    keys = batch.column(c.ROW_KEY).to_numpy()
    buckets = first % np.uint64(n_buckets)
    for bucket in np.unique(buckets):
        mask = buckets == bucket
        yield int(bucket), (first[mask], second[mask], keys[mask])


def _losers_of_bucket(bucket_and_parts) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row keys to drop, row key kept for each) within one hash bucket: all but the lowest key per id."""
    _, parts = bucket_and_parts
    parts = list(parts)
    first = np.concatenate([p[0] for p in parts])
    second = np.concatenate([p[1] for p in parts])
    keys = np.concatenate([p[2] for p in parts])
    order = np.lexsort((keys, second, first))
    first, second, keys = first[order], second[order], keys[order]
    repeat = np.zeros(len(keys), dtype=bool)
    repeat[1:] = (first[1:] == first[:-1]) & (second[1:] == second[:-1])
    if not repeat.any():
        return
    # The kept key of each run of equal ids is the run's first (lowest) key.
    run_start = np.maximum.accumulate(np.where(~repeat, np.arange(len(keys)), 0))
    yield keys[repeat], keys[run_start[repeat]]


class FindRepeatedPhotoIds(beam.PTransform):
    """Batches with ``ROW_KEY`` -> (row keys to drop, row key kept for each) arrays, one element per hash bucket.

    Only two uint64 hashes and the row key per photo are shuffled, grouped into ``n_buckets`` buckets so the
    per-element cost is per batch, not per row. With ``validate_with=(embedding_dim, need_embedding)`` rows that
    ``row_problem`` rejects are left out first, so that a job can feed this from a second, light read of its
    input and keep its main batches flowing without waiting for the result (see ``DropRepeatedPhotoIds``).
    """

    def __init__(self, n_buckets: int = 32, validate_with: tuple | None = None):
        super().__init__()
        self._n_buckets, self._validate_with = n_buckets, validate_with

    def expand(self, batches):
        return (
            batches
            | "Key photo ids by hash bucket" >> beam.FlatMap(_fingerprints_by_bucket, self._n_buckets, self._validate_with)
            | "Gather each bucket" >> beam.GroupByKey()
            | "Find repeated photo ids" >> beam.FlatMap(_losers_of_bucket)
        )


class _DropLosersFn(beam.DoFn):
    def __init__(self, job: str):
        self._job = job
        self._cache_token = None
        self._lost = np.zeros(0, np.int64)
        self._kept = np.zeros(0, np.int64)

    def process(self, batch: pa.RecordBatch, repeats: list):
        if not repeats:
            yield batch
            return
        if self._cache_token is not id(repeats):
            lost = np.concatenate([r[0] for r in repeats])
            order = np.argsort(lost)
            self._lost, self._kept = lost[order], np.concatenate([r[1] for r in repeats])[order]
            self._cache_token = id(repeats)
        keys = batch.column(c.ROW_KEY).to_numpy()
        drop = np.isin(keys, self._lost)
        if not drop.any():
            yield batch
            return
        for i in np.flatnonzero(drop):
            kept = self._kept[np.searchsorted(self._lost, keys[i])]
            file_ordinal, row_index = row_file_and_index(kept)
            detail = f"photo_id seen before (kept: input file #{file_ordinal}, row {row_index})"
            row = batch_row(batch, int(i))
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(self._job, Reason.DUPLICATE_PHOTO_ID, detail, row))
        yield batch.filter(pa.array(~drop))


class DropRepeatedPhotoIds(beam.PTransform):
    """Batches -> ``valid`` (rows not in ``repeats``) and ``dead_letters`` (``duplicate_photo_id``)."""

    def __init__(self, job: str, repeats):
        super().__init__()
        self._job, self._repeats = job, repeats

    def expand(self, batches):
        return batches | "Drop repeated photo ids" >> beam.ParDo(
            _DropLosersFn(self._job), beam.pvalue.AsList(self._repeats)
        ).with_outputs(DEAD, main=VALID)


class DropDuplicatePhotoIds(beam.PTransform):
    """Valid batches -> ``valid`` (first occurrence of each photo_id: lowest ``ROW_KEY``, i.e. earliest file in
    sorted order, then earliest row) and ``dead_letters`` for the repeats.

    Simple form: the batches wait (materialized) until all repeats are known. For large inputs prefer
    ``FindRepeatedPhotoIds(validate_with=...)`` on a second read plus ``DropRepeatedPhotoIds``.
    """

    def __init__(self, job: str, n_buckets: int = 32):
        super().__init__()
        self._job, self._n_buckets = job, n_buckets

    def expand(self, batches):
        repeats = batches | "Find repeats" >> FindRepeatedPhotoIds(self._n_buckets)
        return batches | "Drop repeats" >> DropRepeatedPhotoIds(self._job, repeats)


# ----------------------------------------------------------------------------------------------- writing


def _count_rows(batch: pa.RecordBatch, counter, job: str = "") -> pa.RecordBatch:
    counter.inc(batch.num_rows)
    if job:
        progress.advance(job, "written", batch.num_rows)
    return batch


class CountRowsOut(beam.PTransform):
    """Pass RecordBatches through, counting their rows as the job's ``rows_out``."""

    def __init__(self, job: str):
        super().__init__()
        self._job = job

    def expand(self, batches):
        return batches | "Count rows out" >> beam.Map(_count_rows, Metrics.counter(self._job, ROWS_OUT), self._job)


def to_output_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """The batch's columns of ``schema`` (internal ones dropped), cast to it."""
    arrays = [batch.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class WriteBatchesToParquet(beam.PTransform):
    """RecordBatches -> Parquet shards ``part-SSSSS-of-NNNNN.parquet`` in ``directory`` (with Beam's finalize step,
    so a retried bundle never leaves a duplicate shard)."""

    def __init__(self, directory: str, schema: pa.Schema, num_shards: int = 0, prefix: str = "part"):
        super().__init__()
        self._directory, self._schema, self._num_shards, self._prefix = directory, schema, num_shards, prefix

    def expand(self, batches):
        schema = self._schema
        return (
            batches
            | "Keep the artifact's columns" >> beam.Map(to_output_table, schema)
            | "Write Parquet shards"
            >> beam.io.WriteToParquetBatched(
                FileSystems.join(self._directory, self._prefix),
                schema=schema,
                codec="snappy",
                file_name_suffix=".parquet",
                num_shards=self._num_shards,
            )
        )


def _count_dead_letter(row: dict, job: str) -> dict:
    Metrics.counter(job, row[c.REASON]).inc()
    return row


class WriteDeadLetters(beam.PTransform):
    """Dead-letter dicts (one PCollection or a tuple of them) -> Parquet in ``directory``; counts each reason.

    Counting here, in one place, means every dead letter is counted once whichever step produced it.
    """

    def __init__(self, directory: str, job: str):
        super().__init__()
        self._directory, self._job = directory, job

    def expand(self, dead_letters):
        if isinstance(dead_letters, (tuple, list)):
            dead_letters = dead_letters | "Gather dead letters" >> beam.Flatten()
        return (
            dead_letters
            | "Count dead letters by reason" >> beam.Map(_count_dead_letter, self._job)
            | "Write dead letters"
            >> beam.io.WriteToParquet(
                FileSystems.join(self._directory, "part"),
                schema=DEAD_LETTERS,
                file_name_suffix=".parquet",
                num_shards=1,
            )
        )


# ----------------------------------------------------------------------------------------------- outputs


class StagedOutput:
    """An output directory written into a staging sibling and moved into place with ``_SUCCESS`` on ``commit()``.

    Readers refuse a directory without the marker, so a killed job leaves either the previous artifact or a
    ``*.staging-*`` directory nobody reads. Local paths swap by rename; on object stores (``gs://``) the files
    are copied into place and ``_SUCCESS`` is written last.
    """

    def __init__(self, final_dir: str):
        self.final = final_dir.rstrip("/")
        # Nothing is created until the pipeline writes, so a job refused at launch leaves no trace.
        self.path = f"{self.final}.staging-{uuid.uuid4().hex[:12]}"

    def commit(self) -> None:
        if not is_remote(self.final):
            os.makedirs(self.path, exist_ok=True)
            replace_directory_atomic(self.path, self.final)
            return
        marker = FileSystems.join(self.final, SUCCESS_MARKER)
        if FileSystems.exists(marker):
            FileSystems.delete([marker])
        old = [m.path for m in FileSystems.match([FileSystems.join(self.final, "*")])[0].metadata_list]
        if old:
            FileSystems.delete(old)
        new = [m.path for m in FileSystems.match([FileSystems.join(self.path, "**")])[0].metadata_list]
        FileSystems.rename(new, [self.final + p[len(self.path) :] for p in new])
        with FileSystems.create(marker) as handle:
            handle.write(b"")

    def abort(self) -> None:
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])


# ----------------------------------------------------------------------------------------------- summary


@dataclass
class JobSummary:
    """Row accounting of one job run, read from its Beam counters."""

    job: str
    rows_in: int
    rows_out: int
    dead_letters: dict[str, int] = field(default_factory=dict)
    # Every counter of the job's namespace, for job-specific figures (e.g. examples per split).
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def dead_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.dead_total

    def line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items()) if v) or "none"
        verdict = "balanced" if self.balanced else "UNBALANCED"
        return (
            f"{self.job}: rows in {self.rows_in}, rows out {self.rows_out}, "
            f"dead letters {self.dead_total} ({reasons}); {verdict}"
        )


def summarize(result: PipelineResult, job: str) -> JobSummary:
    """Sum the job's counters over all steps (committed values where the runner has them)."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(job))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    dead = {reason: totals[reason] for reason in Reason.ALL if totals.get(reason)}
    return JobSummary(job, totals.get(ROWS_IN, 0), totals.get(ROWS_OUT, 0), dead, totals)


class UnbalancedJobError(RuntimeError):
    """rows in != rows out + dead letters: some rows were lost; outputs were not committed."""


def run_job(
    pipeline: beam.Pipeline,
    job: str,
    outputs: Sequence[StagedOutput] = (),
    before_commit: Callable[[JobSummary], None] | None = None,
) -> JobSummary:
    """Run to completion, check the accounting, commit staged outputs, log the one summary line.

    Outputs are committed only when the pipeline finished DONE and every row is accounted for;
    ``before_commit(summary)`` can add files to the staging directories first (e.g. a manifest with counts).
    """
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
        if state not in (None, PipelineState.DONE):
            raise RuntimeError(f"{job}: pipeline ended in state {state}; outputs not committed")
        summary = summarize(result, job)
        if not summary.balanced:
            raise UnbalancedJobError(summary.line())
        if before_commit is not None:
            before_commit(summary)
    except BaseException:
        # A job killed outright leaves its *.staging-* directories behind; readers refuse them (no marker).
        for output in outputs:
            output.abort()
        raise
    for output in outputs:
        output.commit()
    # The one summary line (stdout, for people and schedulers), with where the job wrote.
    where = ", ".join(output.final for output in outputs)
    print(summary.line() + (f"; wrote {where}" if where else ""), flush=True)
    return summary
