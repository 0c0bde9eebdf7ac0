"""Reading inputs and validating rows: CSV/Parquet -> Arrow batches -> ``valid`` and ``dead_letters``.

- ``ReadTableBatches(path, job)``: CSV or Parquet files, a glob, or a completed artifact directory (local or
  ``gs://``, through ``FileSystems``) -> a PCollection of Arrow ``RecordBatch``es with canonical column types and
  the internal ``ROW_KEY`` column; tallies ``rows_in`` for the job's commit step (``pipelines.commit``).
- ``ValidateBatches(job, embedding_dim, need_embedding)``: vectorized pre-check, ``schemas.row_problem`` on the
  suspicious rows -> outputs ``valid`` (batches) and ``dead_letters`` (``schemas.DEAD_LETTERS`` dicts).
  ``ValidateRows`` is the same for PCollections of dict rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import progress
from pipelines.commit import ROWS_IN, ledger
from pipelines.dead_letters import DEAD, VALID, batch_row, dead_letter, row_file_and_index  # noqa: F401
from pipelines.options import DEFAULT_BATCH_ROWS
from schemas import EMBEDDING_TYPE
from schemas import columns as c
from schemas.io import TABLE_SUFFIXES, list_table_files
from schemas.tables import row_problem, row_problems, suspicious_rows  # noqa: F401  (re-exported for the jobs)

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
    """The normalized schema of an input's first file (for validating columns at launch).

    An unreadable first file (empty, not CSV/Parquet) is a ``SchemaError`` naming it.
    """
    first = list_table_files(path, TABLE_SUFFIXES)[0]
    try:
        with FileSystems.open(first) as handle:
            if first.endswith(".parquet"):
                schema = pq.ParquetFile(handle).schema_arrow
            else:
                header = pacsv.open_csv(
                    handle, convert_options=pacsv.ConvertOptions(column_types=_csv_string_columns())
                ).schema
                schema = pa.schema([pa.field(n, _CANONICAL_TYPES.get(n, header.field(n).type)) for n in header.names])
    except (pa.ArrowInvalid, OSError) as error:
        from schemas import SchemaError

        raise SchemaError(f"input {first}: cannot read it as a table ({str(error).splitlines()[0]})") from None
    return pa.schema([pa.field(f.name, _CANONICAL_TYPES.get(f.name, f.type)) for f in schema])


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
        self._files = list_table_files(path, TABLE_SUFFIXES)
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

        batches = (
            pbegin
            | "List the input files" >> beam.Create(list(enumerate(self._files)))
            | "Split files into row groups" >> beam.FlatMap(_parquet_units)
            | "Spread row groups over workers" >> beam.Reshuffle()
            | "Read row groups as Arrow batches" >> beam.FlatMap(read)
        )
        if self._count:
            # The commit step's count of rows in comes from the data itself, not from runner metrics.
            ledger(pbegin.pipeline, self._job).tally(ROWS_IN, batches, "Count rows in")
        return batches


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


