"""Dead letters and repeated photo ids.

- ``dead_letter(job, reason, detail, row)``: one ``schemas.DEAD_LETTERS`` row (the original row as JSON, so it
  can be fixed and replayed).
- ``DropDuplicatePhotoIds(job)``: keeps the first occurrence of each photo_id (lowest ``ROW_KEY``: earliest file in
  sorted order, then earliest row) and sends the others to the dead letters. For big inputs,
  ``FindRepeatedPhotoIds(validate_with=...)`` on a second read + ``DropRepeatedPhotoIds`` keep the main batches
  streaming instead of waiting materialized for the side input (``bucket_cells`` does this).
- ``WriteDeadLetters(directory, job)``: the single place that counts dead letters by reason (counters for
  monitoring, tallies for the job's commit step).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.commit import DEAD_PREFIX, ledger
from schemas import DEAD_LETTERS, Reason
from schemas import columns as c
from schemas.tables import row_problems

VALID = "valid"
DEAD = "dead_letters"


_ROW_BITS = 40  # ROW_KEY = file ordinal << 40 | row in file (see pipelines.reading)


def row_file_and_index(row_key: int) -> tuple[int, int]:
    """(input file ordinal, row within that file) of a ``ROW_KEY``."""
    return int(row_key) >> _ROW_BITS, int(row_key) & ((1 << _ROW_BITS) - 1)


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


# ----------------------------------------------------------------------------------------------- duplicates


def stable_photo_hash(photo_ids: Sequence[str] | np.ndarray, salt: str = "0123456789123456") -> np.ndarray:
    """uint64 hash of photo ids, identical in every process and run (unlike Python's salted ``hash``)."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(photo_ids, dtype=object), hash_key=salt)


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
        # The side input is the same list object for every batch of a bundle: convert it once.
        if self._cache_token != id(repeats):
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


def _dead_letter_key(row: dict) -> tuple[str, int]:
    return DEAD_PREFIX + row[c.REASON], 1


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
        counted = dead_letters | "Count dead letters by reason" >> beam.Map(_count_dead_letter, self._job)
        jobs_ledger = ledger(counted.pipeline, self._job)
        jobs_ledger.tally_by(counted, _dead_letter_key, "Tally dead letters by reason")
        written = counted | "Write dead letters" >> beam.io.WriteToParquet(
            FileSystems.join(self._directory, "part"),
            schema=DEAD_LETTERS,
            file_name_suffix=".parquet",
            num_shards=1,
        )
        jobs_ledger.written(written)
        return written


