"""Schema validators name the table, column and problem; row_problem gives each bad row its reason; artifact
I/O refuses incomplete directories and replaces artifacts atomically."""

from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import Reason, SchemaError
from schemas import columns as c
from schemas import io as artifact_io

DIM = 4


def features_table(n: int = 3, dim: int = DIM, **overrides) -> pa.Table:
    data = {
        c.PHOTO_ID: [f"p{i}" for i in range(n)],
        c.LAT: [10.0 * i for i in range(n)],
        c.LNG: [-20.0 * i for i in range(n)],
        c.EMBEDDING: [[float(i)] * dim for i in range(n)],
    }
    data.update(overrides)
    return pa.table(data, schema=pa.schema([schemas.FEATURES.field(name) for name in data]).remove_metadata())


def cells_table(ids=(1 << 60 | 1, 3 << 60 | 1)) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            c.CELL_ID: pa.array(ids, pa.uint64()),
            c.LEVEL: pa.array([30] * n, pa.int8()),
            c.N_IMAGES: pa.array([1] * n, pa.int64()),
            c.X_SUM: [1.0] * n,
            c.Y_SUM: [0.0] * n,
            c.Z_SUM: [0.0] * n,
            c.FEATURE_SUM: pa.array([[0.5, 0.5]] * n, pa.list_(pa.float64())),
        }
    )


# ------------------------------------------------------------------------------------------ validators


def test_clean_tables_pass():
    schemas.validate_features(features_table(), embedding_dim=DIM)
    schemas.validate_cells(cells_table())
    schemas.validate_manifest(schemas.MANIFEST)


def test_missing_column_is_named():
    table = features_table().drop_columns([c.LNG])
    with pytest.raises(SchemaError, match=r"features: missing column 'lng'"):
        schemas.validate_features(table)


def test_wrong_type_is_named():
    table = features_table().set_column(1, c.LAT, pa.array(["north"] * 3))
    with pytest.raises(SchemaError, match=r"column 'lat' has type string, expected double"):
        schemas.validate_features(table)
    bad_embedding = features_table().set_column(3, c.EMBEDDING, pa.array(["x"] * 3))
    with pytest.raises(SchemaError, match=r"column 'embedding' has type string"):
        schemas.validate_features(bad_embedding)


def test_compatible_widths_are_accepted():
    # A CSV reader's int64 latitude, float64 embeddings and large strings are fine.
    table = pa.table(
        {
            c.PHOTO_ID: pa.array(["a"], pa.large_string()),
            c.LAT: pa.array([45], pa.int64()),
            c.LNG: pa.array([7], pa.int32()),
            c.EMBEDDING: pa.array([[1.0] * DIM], pa.large_list(pa.float64())),
        }
    )
    schemas.validate_features(table, embedding_dim=DIM)


def test_wrong_embedding_length_is_named_with_its_row():
    table = features_table(embedding=[[0.0] * DIM, [0.0] * (DIM - 1), [0.0] * DIM])
    with pytest.raises(SchemaError, match=r"column 'embedding' has length 3 at row 1, expected 4"):
        schemas.validate_features(table, embedding_dim=DIM)


@pytest.mark.parametrize(
    "column, values, message",
    [
        (c.LAT, [0.0, 90.5, 0.0], "column 'lat' out of range at row 1"),
        (c.LAT, [0.0, 0.0, math.nan], "column 'lat' out of range at row 2"),
        (c.LNG, [-180.01, 0.0, 0.0], "column 'lng' out of range at row 0"),
        (c.LNG, [0.0, math.inf, 0.0], "column 'lng' out of range at row 1"),
    ],
)
def test_latlng_out_of_range_is_named(column, values, message):
    with pytest.raises(SchemaError, match=message):
        schemas.validate_features(features_table(**{column: values}))


def test_range_boundaries_are_allowed():
    schemas.validate_features(features_table(lat=[90.0, -90.0, 0.0], lng=[180.0, -180.0, 0.0]))


def test_nulls_in_required_columns_are_named():
    embeddings = pa.array([[0.0] * DIM, None, [0.0] * DIM], pa.list_(pa.float32()))
    with pytest.raises(SchemaError, match=r"column 'embedding' is null at row 1"):
        schemas.validate_features(features_table(embedding=embeddings), embedding_dim=DIM)
    with pytest.raises(SchemaError, match=r"column 'photo_id' is null at row 2"):
        schemas.validate_features(features_table(photo_id=["a", "b", None]))


def test_manifest_needs_an_image_or_an_embedding():
    no_source = pa.schema([schemas.MANIFEST.field(n) for n in (c.PHOTO_ID, c.LAT, c.LNG)])
    with pytest.raises(SchemaError, match=r"'image_uri' or an 'embedding'"):
        schemas.validate_manifest(no_source)
    no_id = pa.schema([schemas.MANIFEST.field(n) for n in (c.LAT, c.LNG, c.IMAGE_URI)])
    with pytest.raises(SchemaError, match=r"manifest: missing column 'photo_id'"):
        schemas.validate_manifest(no_id)
    schemas.validate_manifest(pa.schema([schemas.MANIFEST.field(n) for n in (c.PHOTO_ID, c.LAT, c.LNG, c.EMBEDDING)]))


def test_duplicate_cells_are_refused():
    with pytest.raises(SchemaError, match=r"cells: column 'cell_id' has duplicate ids"):
        schemas.validate_cells(cells_table(ids=(1 << 60 | 1, 1 << 60 | 1)))


def test_cells_missing_level_is_named():
    with pytest.raises(SchemaError, match=r"missing column 'level'"):
        schemas.validate_cells(cells_table().drop_columns([c.LEVEL]))


# ----------------------------------------------------------------------------------------- row_problem

GOOD_ROW = {c.PHOTO_ID: "p1", c.LAT: 48.85, c.LNG: 2.35, c.EMBEDDING: [0.1] * DIM}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({c.PHOTO_ID: None}, Reason.MISSING_PHOTO_ID),
        ({c.PHOTO_ID: ""}, Reason.MISSING_PHOTO_ID),
        ({c.LAT: None}, Reason.MISSING_LATLNG),
        ({c.LNG: ""}, Reason.MISSING_LATLNG),
        ({c.LAT: "north"}, Reason.MISSING_LATLNG),
        ({c.LAT: math.nan}, Reason.NAN_LATLNG),
        ({c.LNG: "inf"}, Reason.NAN_LATLNG),
        ({c.LAT: 90.0001}, Reason.LAT_OUT_OF_RANGE),
        ({c.LAT: -91}, Reason.LAT_OUT_OF_RANGE),
        ({c.LNG: 180.5}, Reason.LNG_OUT_OF_RANGE),
        ({c.LNG: -360.0}, Reason.LNG_OUT_OF_RANGE),
        ({c.EMBEDDING: None}, Reason.MISSING_EMBEDDING),
        ({c.EMBEDDING: [0.1] * (DIM + 1)}, Reason.BAD_EMBEDDING_LENGTH),
        ({c.EMBEDDING: []}, Reason.BAD_EMBEDDING_LENGTH),
        ({c.EMBEDDING: [0.1, math.nan, 0.1, 0.1]}, Reason.NAN_EMBEDDING),
        ({c.EMBEDDING: np.array([0.1, 0.1, -np.inf, 0.1], dtype=np.float32)}, Reason.NAN_EMBEDDING),
        ({c.EMBEDDING: ["a", "b", "c", "d"]}, Reason.NAN_EMBEDDING),
        ({c.EMBEDDING: 0.5}, Reason.NAN_EMBEDDING),
        ({c.EMBEDDING: "abcd"}, Reason.NAN_EMBEDDING),
    ],
)
def test_row_problem_gives_each_bad_row_its_reason(change, reason):
    problem = schemas.row_problem({**GOOD_ROW, **change}, embedding_dim=DIM, need_embedding=True)
    assert problem is not None and problem[0] == reason
    assert reason in Reason.ALL
    assert problem[1]  # the detail says what was wrong


def test_row_problem_accepts_good_rows_and_edges():
    assert schemas.row_problem(GOOD_ROW, embedding_dim=DIM, need_embedding=True) is None
    assert schemas.row_problem({**GOOD_ROW, c.LAT: "-90", c.LNG: 180}, embedding_dim=DIM) is None
    # A manifest row with an image and no embedding is fine unless an embedding is required.
    no_embedding = {c.PHOTO_ID: "p", c.LAT: 0, c.LNG: 0, c.IMAGE_URI: "x.jpg"}
    assert schemas.row_problem(no_embedding) is None
    assert schemas.row_problem(no_embedding, need_embedding=True)[0] == Reason.MISSING_EMBEDDING


def test_row_problem_details_name_the_values():
    assert "lat=95.0" in schemas.row_problem({**GOOD_ROW, c.LAT: 95.0})[1]
    assert "length 5, expected 4" in schemas.row_problem({**GOOD_ROW, c.EMBEDDING: [0.0] * 5}, embedding_dim=DIM)[1]


def test_reasons_are_unique_and_complete():
    declared = {v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)}
    assert len(Reason.ALL) == len(set(Reason.ALL))
    assert set(Reason.ALL) == declared


def test_dead_letter_schema_keeps_the_original_record():
    assert {c.JOB, c.REASON, c.DETAIL, c.PHOTO_ID, c.RECORD} == set(schemas.DEAD_LETTERS.names)
    assert not schemas.DEAD_LETTERS.field(c.REASON).nullable


# ----------------------------------------------------------------------------------------- artifact I/O


def test_single_file_round_trip_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / "features.parquet")
    table = features_table()
    artifact_io.write_table_atomic(table, path)
    assert artifact_io.read_table(path).equals(table)
    assert os.listdir(tmp_path) == ["features.parquet"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = str(tmp_path / "features.parquet")
    artifact_io.write_table_atomic(features_table(2), path)

    def crash(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(artifact_io.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        artifact_io.write_table_atomic(features_table(3), path)
    monkeypatch.undo()
    assert artifact_io.read_table(path).num_rows == 2
    assert os.listdir(tmp_path) == ["features.parquet"]


def test_directory_without_success_marker_is_refused(tmp_path):
    shards = tmp_path / "features"
    shards.mkdir()
    pq.write_table(features_table(), shards / "part-00000.parquet")
    with pytest.raises(artifact_io.IncompleteArtifactError, match="no _SUCCESS marker"):
        artifact_io.read_table(str(shards))
    (shards / artifact_io.SUCCESS_MARKER).touch()
    assert artifact_io.read_table(str(shards)).num_rows == 3


def test_shards_are_read_in_order_and_concatenated(tmp_path):
    staging = artifact_io.staging_path(str(tmp_path / "features"))
    pq.write_table(features_table(2), os.path.join(staging, "part-00001.parquet"))
    pq.write_table(features_table(3), os.path.join(staging, "part-00000.parquet"))
    artifact_io.replace_directory_atomic(staging, str(tmp_path / "features"))
    table = artifact_io.read_table(str(tmp_path / "features"), columns=[c.PHOTO_ID])
    assert table.column_names == [c.PHOTO_ID]
    assert table.column(c.PHOTO_ID).to_pylist() == ["p0", "p1", "p2", "p0", "p1"]


def test_atomic_directory_replace(tmp_path):
    final = str(tmp_path / "cells")
    first = artifact_io.staging_path(final)
    assert os.path.dirname(first) == str(tmp_path) and os.path.isdir(first)
    pq.write_table(cells_table(), os.path.join(first, "part-0.parquet"))
    pq.write_table(cells_table(), os.path.join(first, "part-1.parquet"))
    artifact_io.replace_directory_atomic(first, final)
    assert artifact_io.read_table(final).num_rows == 4

    second = artifact_io.staging_path(final)
    pq.write_table(cells_table(ids=(5 << 60 | 1,)), os.path.join(second, "part-0.parquet"))
    artifact_io.replace_directory_atomic(second, final)
    # The old shards are gone, not mixed in; no staging or old sibling is left behind.
    assert sorted(os.listdir(final)) == [artifact_io.SUCCESS_MARKER, "part-0.parquet"]
    assert artifact_io.read_table(final).column(c.CELL_ID).to_pylist() == [5 << 60 | 1]
    assert os.listdir(tmp_path) == ["cells"]


def test_failed_directory_swap_keeps_the_previous_artifact(tmp_path, monkeypatch):
    final = str(tmp_path / "cells")
    first = artifact_io.staging_path(final)
    pq.write_table(cells_table(), os.path.join(first, "part-0.parquet"))
    artifact_io.replace_directory_atomic(first, final)
    second = artifact_io.staging_path(final)
    real_replace = os.replace

    def refuse_staging(src, dst):
        if src == second:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(artifact_io.os, "replace", refuse_staging)
    with pytest.raises(OSError, match="rename failed"):
        artifact_io.replace_directory_atomic(second, final)
    monkeypatch.undo()
    assert artifact_io.read_table(final).num_rows == 2


def test_missing_paths_and_empty_artifacts_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        artifact_io.read_table(str(tmp_path / "nope.parquet"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        artifact_io.read_table(str(tmp_path / "part-*.parquet"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / artifact_io.SUCCESS_MARKER).touch()
    with pytest.raises(FileNotFoundError, match="no .parquet files"):
        artifact_io.read_table(str(empty))


def test_glob_reads_matching_files(tmp_path):
    for i in range(3):
        pq.write_table(features_table(i + 1), tmp_path / f"part-{i}.parquet")
    assert artifact_io.read_table(str(tmp_path / "part-*.parquet")).num_rows == 6


def test_remote_directory_without_marker_is_refused(monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    present = {"gs://bucket/done/_SUCCESS"}
    monkeypatch.setattr(FileSystems, "exists", staticmethod(lambda path: path in present))
    matched = []

    class _Match:
        def __init__(self, pattern):
            matched.append(pattern)
            self.metadata_list = []

    monkeypatch.setattr(FileSystems, "match", staticmethod(lambda patterns: [_Match(p) for p in patterns]))
    # The marker is read too (it lists the files' checksums); an empty one means "complete, nothing to verify".
    import io

    monkeypatch.setattr(FileSystems, "open", staticmethod(lambda path, **kwargs: io.BytesIO(b"")))
    with pytest.raises(artifact_io.IncompleteArtifactError, match="gs://bucket/running"):
        artifact_io.list_table_files("gs://bucket/running")
    assert artifact_io.list_table_files("gs://bucket/done/", allow_empty=True) == []
    assert matched == ["gs://bucket/done/*.parquet"]


def test_row_problem_without_location_need_still_checks_the_rest():
    from schemas import row_problem

    assert row_problem({c.PHOTO_ID: "a", c.EMBEDDING: [0.1, 0.2]}, 2, need_location=False) is None
    assert row_problem({c.PHOTO_ID: "a", c.LAT: 999.0, c.EMBEDDING: [0.1, 0.2]}, 2, need_location=False) is None
    assert row_problem({c.PHOTO_ID: "a", c.EMBEDDING: [0.1]}, 2, need_location=False)[0] == Reason.BAD_EMBEDDING_LENGTH
    assert row_problem({c.PHOTO_ID: "", c.EMBEDDING: [0.1, 0.2]}, 2, need_location=False)[0] == Reason.MISSING_PHOTO_ID
    assert row_problem({c.PHOTO_ID: "a", c.EMBEDDING: [0.1, 0.2]}, 2)[0] == Reason.MISSING_LATLNG
