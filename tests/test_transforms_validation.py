"""TestPipeline + assert_that on beam.Create input for the row-checking composites of ``pipelines.reading`` and
``pipelines.dead_letters``: ValidateBatches, ValidateRows, FindRepeatedPhotoIds, DropRepeatedPhotoIds.

Expected outputs are written out by hand per row (the reason each broken row has) or computed with pandas
(first occurrence of each id by row key), not with the functions the transforms call.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import common
from schemas import Reason
from schemas import columns as c

DIM = 3
SCHEMA = pa.schema(
    [(c.PHOTO_ID, pa.string()), (c.LAT, pa.float64()), (c.LNG, pa.float64()), (c.EMBEDDING, pa.list_(pa.float32()))]
)
GOOD = [0.5, 1.0, -2.0]
# (row, the reason a correct validator gives it, or None for a clean row)
CASES = [
    ({c.PHOTO_ID: "ok1", c.LAT: 10.0, c.LNG: 20.0, c.EMBEDDING: GOOD}, None),
    ({c.PHOTO_ID: "ok2", c.LAT: -90.0, c.LNG: 180.0, c.EMBEDDING: GOOD}, None),
    ({c.PHOTO_ID: "nolat", c.LAT: None, c.LNG: 20.0, c.EMBEDDING: GOOD}, Reason.MISSING_LATLNG),
    ({c.PHOTO_ID: "nanlng", c.LAT: 1.0, c.LNG: math.nan, c.EMBEDDING: GOOD}, Reason.NAN_LATLNG),
    ({c.PHOTO_ID: "north", c.LAT: 90.5, c.LNG: 0.0, c.EMBEDDING: GOOD}, Reason.LAT_OUT_OF_RANGE),
    ({c.PHOTO_ID: "east", c.LAT: 0.0, c.LNG: 181.0, c.EMBEDDING: GOOD}, Reason.LNG_OUT_OF_RANGE),
    ({c.PHOTO_ID: "noemb", c.LAT: 0.0, c.LNG: 1.0, c.EMBEDDING: None}, Reason.MISSING_EMBEDDING),
    ({c.PHOTO_ID: "short", c.LAT: 0.0, c.LNG: 1.0, c.EMBEDDING: [1.0, 2.0]}, Reason.BAD_EMBEDDING_LENGTH),
    ({c.PHOTO_ID: "nanemb", c.LAT: 0.0, c.LNG: 1.0, c.EMBEDDING: [1.0, math.nan, 0.0]}, Reason.NAN_EMBEDDING),
    ({c.PHOTO_ID: None, c.LAT: 0.0, c.LNG: 1.0, c.EMBEDDING: GOOD}, Reason.MISSING_PHOTO_ID),
]


def _ids(batch: pa.RecordBatch) -> list:
    return batch.column(c.PHOTO_ID).to_pylist()


def test_validate_batches_splits_clean_rows_from_each_kind_of_broken_row():
    rows = [row for row, _ in CASES]
    batches = [pa.RecordBatch.from_pylist(rows[:5], schema=SCHEMA), pa.RecordBatch.from_pylist(rows[5:], schema=SCHEMA)]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(batches) | common.ValidateBatches("test", DIM, need_embedding=True)
        assert_that(out[common.VALID] | beam.FlatMap(_ids), equal_to(["ok1", "ok2"]), label="valid")
        dead = out[common.DEAD] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON], d[c.JOB]))
        want = [(row[c.PHOTO_ID], reason, "test") for row, reason in CASES if reason is not None]
        assert_that(dead, equal_to(want), label="dead")


def test_validate_rows_without_embedding_need_keeps_rows_with_bad_embeddings():
    rows = [row for row, _ in CASES]
    embedding_reasons = {Reason.MISSING_EMBEDDING}
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(rows) | common.ValidateRows("rows", DIM, need_embedding=False)
        # Without need_embedding a missing embedding is fine; a present one must still be sound.
        want_valid = ["ok1", "ok2", "noemb"]
        assert_that(out[common.VALID] | beam.Map(lambda r: r[c.PHOTO_ID]), equal_to(want_valid), label="valid")
        want_dead = [(r[c.PHOTO_ID], why) for r, why in CASES if why is not None and why not in embedding_reasons]
        dead = out[common.DEAD] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON]))
        assert_that(dead, equal_to(want_dead), label="dead")


def _keyed_batches(ids: list[str], per_batch: int) -> list[pa.RecordBatch]:
    keys = np.arange(len(ids), dtype=np.int64)[::-1]  # row keys descending, so "first" is not "first in the list"
    return [
        pa.RecordBatch.from_arrays(
            [pa.array(ids[s : s + per_batch]), pa.array(keys[s : s + per_batch])], names=[c.PHOTO_ID, c.ROW_KEY]
        )
        for s in range(0, len(ids), per_batch)
    ]


def _pandas_repeats(ids: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids, "key": np.arange(len(ids))[::-1]}).sort_values("key")
    frame["kept"] = frame.groupby("id")["key"].transform("min")
    return frame[frame["key"] != frame["kept"]]


def test_find_repeated_photo_ids_names_each_repeat_and_the_row_kept_for_it():
    rng = np.random.default_rng(5)
    ids = [f"p{int(k)}" for k in rng.integers(0, 60, size=300)]
    want = _pandas_repeats(ids)
    with test_pipeline.TestPipeline() as p:
        repeats = p | beam.Create(_keyed_batches(ids, 70)) | common.FindRepeatedPhotoIds(n_buckets=4)
        pairs = repeats | beam.FlatMap(lambda r: zip(r[0].tolist(), r[1].tolist()))
        assert_that(pairs, equal_to(list(zip(want["key"].tolist(), want["kept"].tolist()))))


def test_drop_repeated_photo_ids_uses_the_side_input_and_says_which_row_was_kept():
    ids = ["a", "b", "a", "c", "b", "a"]  # keys 5..0: the kept rows are the last "a" (key 0) and "b" (key 1)
    repeats = [(np.array([5, 3], np.int64), np.array([0, 0], np.int64)), (np.array([4], np.int64), np.array([1], np.int64))]
    with test_pipeline.TestPipeline() as p:
        batches = p | "Batches" >> beam.Create(_keyed_batches(ids, 4))
        side = p | "Repeats" >> beam.Create(repeats)
        out = batches | common.DropRepeatedPhotoIds("dedup", side)
        kept = out[common.VALID] | beam.FlatMap(lambda b: zip(_ids(b), b.column(c.ROW_KEY).to_pylist()))
        assert_that(kept, equal_to([("c", 2), ("b", 1), ("a", 0)]), label="kept")
        dead = out[common.DEAD] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON], d[c.DETAIL]))
        detail = "photo_id seen before (kept: input file #0, row {})"
        want = [
            ("a", Reason.DUPLICATE_PHOTO_ID, detail.format(0)),
            ("b", Reason.DUPLICATE_PHOTO_ID, detail.format(1)),
            ("a", Reason.DUPLICATE_PHOTO_ID, detail.format(0)),
        ]
        assert_that(dead, equal_to(want), label="dead")
