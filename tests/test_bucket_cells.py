"""bucket_cells against a plain pandas/NumPy computation (cell ids from s2sphere) on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s2sphere

from pipelines import bucket_cells, common
from sampledata.paths import mp16_coordinates
from schemas import CELLS, PHOTOS_WITH_CELL, check_columns
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, read_table

DIM = 16
N_ROWS = 3000


def _s2_cell(lat: float, lng: float, level: int) -> int:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lng)).parent(level).id()


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    """3,000 real MP-16 photo locations (dense clusters share cells) with random 16-d embeddings, two shards."""
    coords = pd.read_csv(mp16_coordinates(), nrows=N_ROWS)
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(N_ROWS, DIM)).astype(np.float32)
    # Repeat some locations exactly so several cells hold many photos.
    coords.iloc[2000:2400] = coords.iloc[:400].to_numpy()
    table = pa.table(
        {
            c.PHOTO_ID: [f"photo{i:05d}" for i in range(N_ROWS)],
            c.LAT: coords["LAT"].to_numpy(np.float64),
            c.LNG: coords["LON"].to_numpy(np.float64),
            c.EMBEDDING: pa.array(list(emb), type=pa.list_(pa.float32())),
        }
    )
    path = tmp_path_factory.mktemp("features")
    pq.write_table(table.slice(0, 1700), path / "part-0.parquet", row_group_size=500)
    pq.write_table(table.slice(1700), path / "part-1.parquet", row_group_size=500)
    (path / SUCCESS_MARKER).touch()
    return path, table


def _reference_cells(table: pa.Table, level: int) -> pd.DataFrame:
    df = table.to_pandas()
    df["cell"] = [_s2_cell(a, b, level) for a, b in zip(df[c.LAT], df[c.LNG])]
    lat, lng = np.radians(df[c.LAT].to_numpy()), np.radians(df[c.LNG].to_numpy())
    df["x"], df["y"], df["z"] = np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)
    emb = np.stack(df[c.EMBEDDING].to_numpy()).astype(np.float64)
    feats = pd.DataFrame(emb, index=df.index).groupby(df["cell"]).mean()
    agg = df.groupby("cell").agg(n=("cell", "size"), x=("x", "sum"), y=("y", "sum"), z=("z", "sum"))
    return agg.join(feats)


@pytest.mark.parametrize("level", [14, 10])
def test_cells_match_pandas_reference(features_dir, tmp_path, level):
    path, table = features_dir
    out = tmp_path / "bucketed"
    summary = bucket_cells.run(
        [f"--features={path}", f"--output={out}", f"--level={level}", "--cell_shards=4", "--batch_rows=300"]
        + (["--direct_running_mode=multi_processing"] if level == 10 else [])
    )
    assert summary.rows_in == N_ROWS and summary.rows_out == N_ROWS and summary.dead_total == 0
    for name in ("cells", "photos", "dead_letters"):
        assert (out / name / SUCCESS_MARKER).exists()
    assert not list(tmp_path.glob("**/*.staging-*"))

    cells = read_table(str(out / "cells"))
    check_columns("cells", cells.schema, CELLS)
    got = cells.to_pandas().set_index(c.CELL_ID).sort_index()
    want = _reference_cells(table, level)
    assert got.index.is_unique
    assert list(got.index.astype(np.uint64)) == [np.uint64(i) for i in want.index]
    assert (got[c.LEVEL] == level).all()
    np.testing.assert_array_equal(got[c.N_IMAGES].to_numpy(), want["n"].to_numpy())
    # The image-weighted centre is the normalised xyz sum; compare the sums themselves.
    np.testing.assert_allclose(got[[c.X_SUM, c.Y_SUM, c.Z_SUM]].to_numpy(), want[["x", "y", "z"]].to_numpy(), atol=1e-9)
    mean_feature = np.stack(got[c.FEATURE_SUM].to_numpy()) / got[c.N_IMAGES].to_numpy()[:, None]
    np.testing.assert_allclose(mean_feature, want[list(range(DIM))].to_numpy(), atol=1e-5)
    assert (want["n"] > 5).any(), "the fixture must put many photos in some cells"

    photos = read_table(str(out / "photos"))
    check_columns("photos", photos.schema, PHOTOS_WITH_CELL)
    assert photos.num_rows == N_ROWS
    by_id = photos.to_pandas().set_index(c.PHOTO_ID)
    ref = table.to_pandas().set_index(c.PHOTO_ID)
    for pid in ref.index[::97]:
        assert int(by_id.loc[pid, c.CELL_ID]) == _s2_cell(ref.loc[pid, c.LAT], ref.loc[pid, c.LNG], level)
    assert read_table(str(out / "dead_letters")).num_rows == 0


def test_partial_sums_merge_like_one_pass():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, size=1000).astype(np.uint64)
    xyz, feats = rng.normal(size=(1000, 3)), rng.normal(size=(1000, 4))
    ones = np.ones(1000, np.int64)
    fn = bucket_cells.CellAggregateFn()
    accs = []
    for part in np.array_split(np.arange(1000), 7):
        acc = fn.create_accumulator()
        for chunk in np.array_split(part, 20):  # more inputs than the compaction threshold
            acc = fn.add_input(acc, bucket_cells.reduce_by_cell(ids[chunk], ones[chunk], xyz[chunk], feats[chunk]))
        accs.append(acc)
    merged = fn.extract_output(fn.merge_accumulators(accs))
    whole = pd.DataFrame(np.column_stack([xyz, feats]), index=ids).groupby(level=0).sum()
    np.testing.assert_array_equal(merged.cell_ids, whole.index.to_numpy(np.uint64))
    np.testing.assert_array_equal(merged.counts, np.bincount(ids.astype(int))[whole.index.to_numpy(int)])
    np.testing.assert_allclose(np.column_stack([merged.xyz, merged.features]), whole.to_numpy(), atol=1e-12)


def test_missing_input_fails_at_launch_with_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bucket_cells.run([f"--features={tmp_path / 'nope.parquet'}", f"--output={tmp_path / 'out'}"])
    unfinished = tmp_path / "features"
    unfinished.mkdir()
    pq.write_table(pa.table({c.PHOTO_ID: ["a"]}), unfinished / "part.parquet")
    with pytest.raises(Exception, match=SUCCESS_MARKER):
        bucket_cells.run([f"--features={unfinished}", f"--output={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_offline_defaults_never_pick_the_prism_runner():
    args = common.offline_pipeline_args(["--runner=DirectRunner"])
    assert args == ["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
    args = common.offline_pipeline_args(["--direct_num_workers=3"], parallel=True)
    assert args == ["--direct_num_workers=3", "--runner=FnApiRunner", "--direct_running_mode=multi_processing"]
    assert common.offline_pipeline_args(["--runner", "DataflowRunner"]) == ["--runner", "DataflowRunner"]
