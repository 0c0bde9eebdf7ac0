"""TestPipeline + assert_that on beam.Create input for the composites of ``pipelines.bucket_cells``:
AssignCells, AggregateCells and BucketPhotos.

References: s2sphere for the cell of each photo, pandas group-by sums for the cells table.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import s2sphere
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import bucket_cells
from schemas import Reason
from schemas import columns as c

LEVEL = 10
DIM = 4


def _photos(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Points around a few centres, so several photos share a level-10 cell.
    centres = rng.uniform([-60, -170], [60, 170], size=(5, 2))
    which = rng.integers(0, 5, size=n)
    latlng = centres[which] + rng.normal(scale=0.05, size=(n, 2))
    return pd.DataFrame(
        {
            c.PHOTO_ID: [f"p{i}" for i in range(n)],
            c.LAT: latlng[:, 0],
            c.LNG: latlng[:, 1],
            c.EMBEDDING: list(rng.normal(size=(n, DIM)).astype(np.float32)),
        }
    )


def _batches(frame: pd.DataFrame, per_batch: int) -> list[pa.RecordBatch]:
    schema = pa.schema(
        [(c.PHOTO_ID, pa.string()), (c.LAT, pa.float64()), (c.LNG, pa.float64()), (c.EMBEDDING, pa.list_(pa.float32()))]
    )
    out = []
    for s in range(0, len(frame), per_batch):
        part = frame.iloc[s : s + per_batch]
        keys = pa.array(np.arange(s, s + len(part), dtype=np.int64))
        batch = pa.RecordBatch.from_pydict(
            {k: (list(map(list, part[k])) if k == c.EMBEDDING else part[k].tolist()) for k in schema.names}, schema=schema
        )
        out.append(batch.append_column(c.ROW_KEY, keys))
    return out


def _s2_cell(lat: float, lng: float) -> int:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lng)).parent(LEVEL).id()


def _pandas_cells(frame: pd.DataFrame) -> dict[int, tuple]:
    """{cell: (n_images, x, y, z sums, feature sum)} with the cell from s2sphere and the sums from pandas."""
    lat, lng = np.radians(frame[c.LAT].to_numpy()), np.radians(frame[c.LNG].to_numpy())
    table = pd.DataFrame(
        {"x": np.cos(lat) * np.cos(lng), "y": np.cos(lat) * np.sin(lng), "z": np.sin(lat)}
        | {f"f{k}": np.stack(frame[c.EMBEDDING].to_list())[:, k].astype(np.float64) for k in range(DIM)}
    )
    table["cell"] = [_s2_cell(a, b) for a, b in zip(frame[c.LAT], frame[c.LNG])]
    sums = table.groupby("cell").sum()
    counts = table.groupby("cell").size()
    return {
        int(cell): (int(counts[cell]), *sums.loc[cell, ["x", "y", "z"]], list(sums.loc[cell, [f"f{k}" for k in range(DIM)]]))
        for cell in sums.index
    }


def _cell_rows(table: pa.Table):
    for row in table.to_pylist():
        yield row[c.CELL_ID], (row[c.LEVEL], row[c.N_IMAGES], row[c.X_SUM], row[c.Y_SUM], row[c.Z_SUM], row[c.FEATURE_SUM])


def _matches_cells(want: dict[int, tuple]):
    def check(actual):
        got = dict(actual)
        assert len(got) == len(actual), "a cell appears in two shards"
        assert sorted(got) == sorted(want)
        for cell, (level, n, x, y, z, features) in got.items():
            w = want[cell]
            assert level == LEVEL and n == w[0]
            np.testing.assert_allclose([x, y, z], w[1:4], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(features, w[4], rtol=1e-9, atol=1e-9)

    return check


def test_assign_cells_gives_each_photo_its_s2sphere_cell():
    frame = _photos(120, seed=1)
    want = [(p, _s2_cell(a, b)) for p, a, b in zip(frame[c.PHOTO_ID], frame[c.LAT], frame[c.LNG])]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(_batches(frame, 50)) | bucket_cells.AssignCells(LEVEL)
        pairs = out | beam.FlatMap(lambda b: zip(b.column(c.PHOTO_ID).to_pylist(), b.column(c.CELL_ID).to_pylist()))
        assert_that(pairs, equal_to(want))


def test_aggregate_cells_sums_like_pandas_across_batches_and_shards():
    frame = _photos(300, seed=2)
    with test_pipeline.TestPipeline() as p:
        with_cells = p | beam.Create(_batches(frame, 40)) | bucket_cells.AssignCells(LEVEL)
        tables = with_cells | bucket_cells.AggregateCells(LEVEL, n_shards=3)
        assert_that(tables | beam.FlatMap(_cell_rows), _matches_cells(_pandas_cells(frame)))


def test_bucket_photos_drops_bad_and_repeated_rows_and_aggregates_the_rest():
    frame = _photos(80, seed=3)
    frame.loc[5, c.LAT] = math.nan
    frame.loc[9, c.EMBEDDING] = np.ones(DIM + 1, np.float32)
    frame.loc[20, c.PHOTO_ID] = "p3"  # a repeat of p3: row 3 comes first and is kept
    clean = frame.drop(index=[5, 9, 20])
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(_batches(frame, 30)) | bucket_cells.BucketPhotos(DIM, LEVEL, n_shards=2)
        photos = out["photos"] | beam.FlatMap(lambda b: zip(b.column(c.PHOTO_ID).to_pylist(), b.column(c.CELL_ID).to_pylist()))
        want = [(pid, _s2_cell(a, b)) for pid, a, b in zip(clean[c.PHOTO_ID], clean[c.LAT], clean[c.LNG])]
        assert_that(photos, equal_to(want), label="photos")
        assert_that(out["cells"] | beam.FlatMap(_cell_rows), _matches_cells(_pandas_cells(clean)), label="cells")
        dead = out["dead_letters"] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON]))
        want_dead = [("p5", Reason.NAN_LATLNG), ("p9", Reason.BAD_EMBEDDING_LENGTH), ("p3", Reason.DUPLICATE_PHOTO_ID)]
        assert_that(dead, equal_to(want_dead), label="dead")
