"""pipelines.common: batch validation vs schemas.row_problem, duplicates vs pandas, reading, staging, summary."""

from __future__ import annotations

import hashlib
import math

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines import common, reading
from schemas import FEATURES, Reason, row_problem, splits
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, IncompleteArtifactError, read_table


def _random_rows(n: int, dim: int, seed: int) -> list[dict]:
    """Rows where every field is sometimes broken in one of the ways the validators know."""
    rng = np.random.default_rng(seed)
    lat_choices = [None, math.nan, math.inf, -91.0, 90.0, -90.0, 45.5, 12.0, 90.0000001]
    lng_choices = [None, math.nan, -math.inf, 180.0, -180.0, 180.5, -200.0, 3.0, 77.0]
    rows = []
    for i in range(n):
        emb_kind = rng.integers(0, 6)
        if emb_kind == 0:
            emb = None
        elif emb_kind == 1:
            emb = list(rng.normal(size=dim + int(rng.choice([-1, 1]))))
        elif emb_kind == 2:
            emb = list(rng.normal(size=dim))
            emb[int(rng.integers(0, dim))] = float(rng.choice([math.nan, math.inf]))
        else:
            emb = list(rng.normal(size=dim))
        rows.append(
            {
                c.PHOTO_ID: None if rng.random() < 0.05 else ("" if rng.random() < 0.05 else f"id{i}"),
                c.LAT: lat_choices[int(rng.integers(0, len(lat_choices)))] if rng.random() < 0.5 else float(rng.uniform(-90, 90)),
                c.LNG: lng_choices[int(rng.integers(0, len(lng_choices)))] if rng.random() < 0.5 else float(rng.uniform(-180, 180)),
                c.EMBEDDING: emb,
            }
        )
    return rows


@pytest.mark.parametrize("need_embedding", [True, False])
def test_batch_validation_agrees_with_row_problem(need_embedding):
    dim = 6
    rows = _random_rows(600, dim, seed=int(need_embedding))
    batch = pa.RecordBatch.from_pylist(
        rows,
        schema=pa.schema(
            [(c.PHOTO_ID, pa.string()), (c.LAT, pa.float64()), (c.LNG, pa.float64()), (c.EMBEDDING, pa.list_(pa.float32()))]
        ),
    )
    suspects = common.suspicious_rows(batch, dim, need_embedding)
    problems = common.row_problems(batch, dim, need_embedding)
    for i, row in enumerate(batch.to_pylist()):
        want = row_problem(row, embedding_dim=dim, need_embedding=need_embedding)
        assert problems.get(i) == want, (i, row)
        if want is not None:
            assert suspects[i], "the vectorized pre-check must flag every row row_problem rejects"
    assert 0 < len(problems) < len(rows)
    # Clean rows are not all flagged (otherwise the fast path would be pointless).
    assert suspects.sum() < len(rows)


def test_reading_csv_and_parquet_gives_canonical_types_and_stable_row_keys(tmp_path):
    pd.DataFrame({c.PHOTO_ID: [1, 2, 3], c.LAT: ["1.5", "x", ""], c.LNG: [4, 5, 6], "extra": ["a", "b", "c"]}).to_csv(
        tmp_path / "b.csv", index=False
    )
    pq.write_table(
        pa.table({c.PHOTO_ID: ["p", "q"], c.LAT: pa.array([1, 2], pa.int32()), c.LNG: [0.5, 0.25]}),
        tmp_path / "a.parquet",
    )
    files = common.list_table_files(str(tmp_path / "*"), common.TABLE_SUFFIXES)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.parquet", "b.csv"]
    batches = []
    for ordinal, path in enumerate(files):
        for unit in reading._parquet_units((ordinal, path)):
            batches.extend(common.read_unit_batches(unit))
    table = pa.Table.from_batches([b.select([c.PHOTO_ID, c.LAT, c.LNG, c.ROW_KEY]) for b in batches])
    assert table.schema.field(c.LAT).type == pa.float64() and table.schema.field(c.PHOTO_ID).type == pa.string()
    assert table.column(c.PHOTO_ID).to_pylist() == ["p", "q", "1", "2", "3"]
    assert table.column(c.LAT).to_pylist() == [1.0, 2.0, 1.5, None, None]
    keys = table.column(c.ROW_KEY).to_pylist()
    assert [common.row_file_and_index(k) for k in keys] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_directory_inputs_need_their_success_marker(tmp_path):
    pq.write_table(pa.table({c.PHOTO_ID: ["a"]}), tmp_path / "part-0.parquet")
    with pytest.raises(IncompleteArtifactError):
        common.list_table_files(str(tmp_path))
    (tmp_path / SUCCESS_MARKER).touch()
    assert common.list_table_files(str(tmp_path)) == [str(tmp_path / "part-0.parquet")]
    with pytest.raises(FileNotFoundError):
        common.list_table_files(str(tmp_path / "nothing-*.parquet"))


def test_duplicates_keep_the_lowest_row_key_like_pandas():
    rng = np.random.default_rng(4)
    n = 2000
    ids = [f"photo{int(k)}" for k in rng.integers(0, 700, size=n)]
    keys = rng.permutation(n).astype(np.int64) + (np.int64(3) << np.int64(40))
    batches = [
        pa.RecordBatch.from_arrays([pa.array(ids[s : s + 250]), pa.array(keys[s : s + 250])], names=[c.PHOTO_ID, c.ROW_KEY])
        for s in range(0, n, 250)
    ]
    frame = pd.DataFrame({"id": ids, "key": keys}).sort_values("key")
    kept_ref = frame.drop_duplicates("id", keep="first")
    dropped_ref = sorted(set(frame["key"]) - set(kept_ref["key"]))
    with common.local_pipeline() as pipeline:
        out = pipeline | beam.Create(batches) | common.DropDuplicatePhotoIds("test", n_buckets=8)
        kept = out[common.VALID] | beam.FlatMap(lambda b: b.column(c.ROW_KEY).to_pylist())
        dropped = out[common.DEAD] | beam.Map(lambda d: (d[c.REASON], d[c.PHOTO_ID]))
        assert_that(kept, equal_to(sorted(kept_ref["key"].tolist())), label="kept rows")
        want = [(Reason.DUPLICATE_PHOTO_ID, frame.set_index("key").loc[k, "id"]) for k in dropped_ref]
        assert_that(dropped, equal_to(want), label="dropped rows")


def test_stable_hashes_do_not_depend_on_the_process():
    # The examples' eval split, as its rule string in examples.json says (hex digits, not the code's bytes).
    assert splits.split_positions(["abc"])[0] == int(hashlib.md5(b"abc").hexdigest()[:16], 16) / 2**64
    salted = splits.split_positions(["abc"], digest="sha256", salt=b"3:")[0]
    assert salted == int(hashlib.sha256(b"3:abc").hexdigest()[:16], 16) / 2**64
    ids = [f"p{i}" for i in range(4000)]
    mask = splits.held_out(ids, 0.25)
    assert 0.22 < mask.mean() < 0.28 and not np.array_equal(mask, splits.held_out(ids, 0.25, digest="sha256"))
    np.testing.assert_array_equal(common.stable_photo_hash(["a", "b"]), pd.util.hash_array(np.array(["a", "b"], object)))


class _Explode(beam.DoFn):
    def process(self, batch):
        raise RuntimeError("worker killed")


def test_a_failed_job_leaves_no_complete_artifact(tmp_path):
    pq.write_table(
        pa.table({c.PHOTO_ID: ["a"], c.LAT: [1.0], c.LNG: [2.0], c.EMBEDDING: pa.array([[1.0]], pa.list_(pa.float32()))}),
        tmp_path / "in.parquet",
    )
    final = tmp_path / "out"
    staged = common.StagedOutput(str(final))
    pipeline = common.local_pipeline()
    batches = pipeline | common.ReadTableBatches(str(tmp_path / "in.parquet"), "test")
    _ = batches | common.WriteBatchesToParquet(staged.path, FEATURES)
    _ = batches | beam.ParDo(_Explode())
    with pytest.raises(Exception, match="worker killed"):
        common.run_job(pipeline, "test", [staged])
    assert not final.exists() and not list(tmp_path.glob("out.staging-*"))
    # A job killed before it could clean up leaves a staging directory without the marker: never readable.
    killed = tmp_path / "out.staging-killed"
    killed.mkdir()
    pq.write_table(pa.table({c.PHOTO_ID: ["half"]}), killed / "part-00000-of-00001.parquet")
    with pytest.raises(IncompleteArtifactError):
        read_table(str(killed))
    with pytest.raises(IncompleteArtifactError):
        common.list_table_files(str(killed))


def test_unbalanced_accounting_refuses_to_commit(tmp_path):
    pq.write_table(pa.table({c.PHOTO_ID: ["a", "b"], c.LAT: [1.0, 2.0], c.LNG: [2.0, 3.0]}), tmp_path / "in.parquet")
    final = tmp_path / "out"
    staged = common.StagedOutput(str(final))
    pipeline = common.local_pipeline()
    batches = pipeline | common.ReadTableBatches(str(tmp_path / "in.parquet"), "lossy")
    # Silently drop a row: the job must notice.
    kept = batches | beam.Map(lambda b: b.slice(0, 1)) | common.CountRowsOut("lossy")
    _ = kept | beam.Map(lambda b: None)
    with pytest.raises(common.UnbalancedJobError, match="rows in 2, rows out 1"):
        common.run_job(pipeline, "lossy", [staged])
    assert not final.exists()


def test_summary_line_and_committed_artifact(tmp_path):
    pq.write_table(pa.table({c.PHOTO_ID: ["a", "b", "a"], c.LAT: [1.0, 99.0, 1.0], c.LNG: [2.0, 3.0, 2.0]}), tmp_path / "in.parquet")
    final = tmp_path / "out"
    staged, dead_dir = common.StagedOutput(str(final)), common.StagedOutput(str(tmp_path / "dead"))
    pipeline = common.local_pipeline()
    batches = pipeline | common.ReadTableBatches(str(tmp_path / "in.parquet"), "small")
    checked = batches | common.ValidateBatches("small")
    unique = checked[common.VALID] | common.DropDuplicatePhotoIds("small")
    _ = unique[common.VALID] | common.CountRowsOut("small") | common.WriteBatchesToParquet(
        staged.path, pa.schema([FEATURES.field(c.PHOTO_ID), FEATURES.field(c.LAT), FEATURES.field(c.LNG)])
    )
    _ = (checked[common.DEAD], unique[common.DEAD]) | common.WriteDeadLetters(dead_dir.path, "small")
    summary = common.run_job(pipeline, "small", [staged, dead_dir], policy=common.CommitPolicy(max_dead_letter_fraction=1))
    assert summary.line() == (
        "small: rows in 3, rows out 1, dead letters 2 (duplicate_photo_id 1, lat_out_of_range 1); balanced"
    )
    assert (final / SUCCESS_MARKER).exists() and read_table(str(final)).column(c.PHOTO_ID).to_pylist() == ["a"]
    assert read_table(str(tmp_path / "dead")).num_rows == 2
    assert not list(tmp_path.glob("*.staging-*"))


def test_the_ledger_tallies_rows_and_dead_letters_from_the_data():
    """The commit step's counts come from PCollections (rows per batch, one per dead letter by reason)."""
    from apache_beam.testing.test_pipeline import TestPipeline

    batches = [pa.record_batch({c.PHOTO_ID: [f"p{i}" for i in range(k)]}) for k in (3, 0, 4)]
    dead = [common.dead_letter("t", r, "detail", {c.PHOTO_ID: "x"}) for r in
            (Reason.NAN_LATLNG, Reason.NAN_LATLNG, Reason.DUPLICATE_PHOTO_ID)]
    with TestPipeline(options=common.pipeline_options()) as pipeline:
        _ = pipeline | "batches" >> beam.Create(batches) | common.CountRowsOut("t")
        counted = pipeline | "dead" >> beam.Create(dead)
        common.ledger(pipeline).tally_by(counted, lambda row: (common.DEAD_PREFIX + row[c.REASON], 1), "by reason")
        totals = common.ledger(pipeline).tallies | beam.Flatten() | beam.CombinePerKey(sum)
        assert_that(totals, equal_to([(common.ROWS_OUT, 7), (common.DEAD_PREFIX + Reason.NAN_LATLNG, 2),
                                      (common.DEAD_PREFIX + Reason.DUPLICATE_PHOTO_ID, 1)]))


def test_accounting_rules():
    from pipelines.commit import accounting_problem

    policy = common.CommitPolicy()
    ok = common.JobSummary("j", 10, 6, {Reason.NAN_LATLNG: 4})
    assert accounting_problem(ok, policy) is None
    assert "UNBALANCED" in accounting_problem(common.JobSummary("j", 10, 5, {Reason.NAN_LATLNG: 4}), policy)
    assert "read no rows" in accounting_problem(common.JobSummary("j", 0, 0), policy)
    assert accounting_problem(common.JobSummary("j", 0, 0), common.CommitPolicy(allow_empty=True)) is None
    mostly_bad = common.JobSummary("j", 10, 4, {Reason.NAN_LATLNG: 6})
    assert "60% of the rows are dead letters" in accounting_problem(mostly_bad, policy)
    assert accounting_problem(mostly_bad, common.CommitPolicy(max_dead_letter_fraction=0.6)) is None
    summary = common.JobSummary.from_counts("j", {"rows_in": 5, "rows_out": 4, common.DEAD_PREFIX + "nan_latlng": 1})
    assert common.JobSummary.from_meta(summary.to_meta()) == summary and summary.balanced


def test_staged_outputs_are_absolute_and_can_be_hidden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    staged = common.StagedOutput("rel/out")
    assert staged.final == str(tmp_path / "rel" / "out") and staged.path.startswith(staged.final + ".staging-")
    hidden = common.StagedOutput("rel/run_date=2024-01-01", hidden=True)
    assert hidden.path.startswith(str(tmp_path / "rel" / "_run_date=2024-01-01.staging-"))
