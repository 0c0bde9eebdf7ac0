"""Arrow schemas of every table in the data flow, and validators that name the column and the problem.

Tables (DESIGN.md, "Data flow"):
- ``photos``             what ``ingest_photos`` writes: photo_id, lat, lng (EXIF GPS), image_uri, taken_at, camera
- ``manifest``           photos to process: photo_id, lat, lng and image_uri and/or embedding (lat/lng may be
                         absent for photos to geolocate)
- ``features``           photo_id, lat, lng, embedding (one frozen-backbone feature per photo; lat/lng null for
                         photos to geolocate)
- ``photos_with_cell``   features plus the photo's S2 cell id
- ``cells``              one row per non-empty S2 cell: count, xyz sum, feature sum
- ``geoclass_classes``   one row per (set, class): image count, node count, centre
- ``partitions``         built per set list at run time (one class column per set), see partition_gen
- ``predictions``        one row per (photo, method)
- ``dead_letters``       rejected rows with the job, the reason and the original record

Validators raise :class:`SchemaError` with the table, the column and what is wrong, so a bad artifact
stops a job at its door instead of deep inside a transform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import columns as c

EMBEDDING_TYPE = pa.list_(pa.float32())

MANIFEST = pa.schema(
    [
        pa.field(c.PHOTO_ID, pa.string(), nullable=False),
        pa.field(c.LAT, pa.float64()),
        pa.field(c.LNG, pa.float64()),
        pa.field(c.IMAGE_URI, pa.string()),
        pa.field(c.EMBEDDING, EMBEDDING_TYPE),
    ]
)
# A training manifest needs photo_id, lat, lng and at least one of image_uri / embedding; a manifest of photos
# to geolocate needs no lat/lng.
MANIFEST_REQUIRED = (c.PHOTO_ID, c.LAT, c.LNG)

# The photos manifest written by pipelines.ingest_photos (a valid MANIFEST): lat/lng from EXIF GPS (null only
# with --no_require_gps), taken_at/camera where the EXIF has them.
PHOTOS = pa.schema(
    [
        pa.field(c.PHOTO_ID, pa.string(), nullable=False),
        pa.field(c.LAT, pa.float64()),
        pa.field(c.LNG, pa.float64()),
        pa.field(c.IMAGE_URI, pa.string(), nullable=False),
        pa.field(c.TAKEN_AT, pa.string()),
        pa.field(c.CAMERA, pa.string()),
    ]
)

# lat/lng are null for photos to geolocate (extract_features on a manifest without locations); the training
# path (bucket_cells) dead-letters such rows, validate_features refuses them unless need_location=False.
FEATURES = pa.schema(
    [
        pa.field(c.PHOTO_ID, pa.string(), nullable=False),
        pa.field(c.LAT, pa.float64()),
        pa.field(c.LNG, pa.float64()),
        pa.field(c.EMBEDDING, EMBEDDING_TYPE, nullable=False),
    ]
)

PHOTOS_WITH_CELL = pa.schema(
    [
        pa.field(c.PHOTO_ID, pa.string(), nullable=False),
        pa.field(c.LAT, pa.float64(), nullable=False),
        pa.field(c.LNG, pa.float64(), nullable=False),
        pa.field(c.EMBEDDING, EMBEDDING_TYPE, nullable=False),
        pa.field(c.CELL_ID, pa.uint64(), nullable=False),
    ]
)

CELLS = pa.schema(
    [
        pa.field(c.CELL_ID, pa.uint64(), nullable=False),
        pa.field(c.LEVEL, pa.int8(), nullable=False),
        pa.field(c.N_IMAGES, pa.int64(), nullable=False),
        pa.field(c.X_SUM, pa.float64(), nullable=False),
        pa.field(c.Y_SUM, pa.float64(), nullable=False),
        pa.field(c.Z_SUM, pa.float64(), nullable=False),
        # float64 sums: a 30M-photo corpus summed in float32 loses the low digits of every mean.
        pa.field(c.FEATURE_SUM, pa.list_(pa.float64()), nullable=False),
    ]
)

GEOCLASS_CLASSES = pa.schema(
    [
        pa.field(c.SET_ID, pa.string(), nullable=False),
        pa.field(c.CLASS_ID, pa.int32(), nullable=False),
        pa.field(c.N_IMAGES, pa.int64(), nullable=False),
        pa.field(c.N_NODES, pa.int64(), nullable=False),
        pa.field(c.LAT, pa.float64(), nullable=False),
        pa.field(c.LNG, pa.float64(), nullable=False),
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field(c.PHOTO_ID, pa.string(), nullable=False),
        pa.field(c.METHOD, pa.string(), nullable=False),
        pa.field(c.LAT, pa.float64(), nullable=False),
        pa.field(c.LNG, pa.float64(), nullable=False),
        pa.field(c.SCORE, pa.float64(), nullable=False),
        pa.field(c.TOPK_PARTITION_IDS, pa.list_(pa.int64())),
        pa.field(c.TOPK_SCORES, pa.list_(pa.float64())),
        pa.field(c.TOPK_LAT, pa.list_(pa.float64())),
        pa.field(c.TOPK_LNG, pa.list_(pa.float64())),
        pa.field(c.MODEL_ID, pa.string()),
        pa.field(c.PARTITIONS_ID, pa.string()),
        pa.field(c.RUN_DATE, pa.string()),
        # The nearest place of (lat, lng): ISO country code, first-level region, "City, Region, Country".
        pa.field(c.COUNTRY_CODE, pa.string()),
        pa.field(c.ADMIN1, pa.string()),
        pa.field(c.PLACE_NAME, pa.string()),
        pa.field(c.RADIUS50_KM, pa.float64()),
        pa.field(c.RADIUS90_KM, pa.float64()),
    ]
)

DEAD_LETTERS = pa.schema(
    [
        pa.field(c.JOB, pa.string(), nullable=False),
        pa.field(c.REASON, pa.string(), nullable=False),
        pa.field(c.DETAIL, pa.string()),
        pa.field(c.PHOTO_ID, pa.string()),
        # The original row as JSON, so a fixed row can be replayed.
        pa.field(c.RECORD, pa.string()),
    ]
)


class Reason:
    """Dead-letter reasons. Each is also the name of a Beam counter."""

    MISSING_LATLNG = "missing_latlng"
    NAN_LATLNG = "nan_latlng"
    LAT_OUT_OF_RANGE = "lat_out_of_range"
    LNG_OUT_OF_RANGE = "lng_out_of_range"
    MISSING_PHOTO_ID = "missing_photo_id"
    DUPLICATE_PHOTO_ID = "duplicate_photo_id"
    MISSING_EMBEDDING = "missing_embedding"
    BAD_EMBEDDING_LENGTH = "bad_embedding_length"
    NAN_EMBEDDING = "nan_embedding"
    MISSING_FILE = "missing_file"
    UNREADABLE_IMAGE = "unreadable_image"
    UNKNOWN_CELL = "unknown_cell"
    INFERENCE_ERROR = "inference_error"
    # Photos (imagery / ingest_photos): the file itself.
    NOT_AN_IMAGE = "not_an_image"  # no image format recognises the bytes (e.g. a text file named .jpg)
    TOO_MANY_PIXELS = "too_many_pixels"  # declared size above imagery.MAX_PIXELS: a decompression bomb
    DUPLICATE_CONTENT = "duplicate_content"  # the same bytes under another name (the smallest uri is kept)
    # Photos: their EXIF location.
    NO_EXIF = "no_exif"
    NO_GPS = "no_gps"
    GPS_OUT_OF_RANGE = "gps_out_of_range"  # |lat| > 90, |lng| > 180, or exactly 0/0 ("null island")
    MALFORMED_GPS = "malformed_gps"  # zero denominators, missing/odd N/S/E/W refs, minutes or seconds >= 60

    ALL = (
        MISSING_LATLNG,
        NAN_LATLNG,
        LAT_OUT_OF_RANGE,
        LNG_OUT_OF_RANGE,
        MISSING_PHOTO_ID,
        DUPLICATE_PHOTO_ID,
        MISSING_EMBEDDING,
        BAD_EMBEDDING_LENGTH,
        NAN_EMBEDDING,
        MISSING_FILE,
        UNREADABLE_IMAGE,
        UNKNOWN_CELL,
        INFERENCE_ERROR,
        NOT_AN_IMAGE,
        TOO_MANY_PIXELS,
        DUPLICATE_CONTENT,
        NO_EXIF,
        NO_GPS,
        GPS_OUT_OF_RANGE,
        MALFORMED_GPS,
    )


class SchemaError(ValueError):
    """An artifact or table does not match its schema; the message names table, column and problem."""


def check_columns(table_name: str, actual: pa.Schema, expected: pa.Schema, required: Sequence[str] | None = None):
    """Raise SchemaError naming the first missing column or the first column of the wrong type.

    ``required`` limits the presence check to those columns; others in ``expected`` are type-checked
    only when present. Integer/float widths may differ (a CSV reader's int64 lat is fine as a double).
    """
    required = list(required) if required is not None else list(expected.names)
    for name in required:
        if name not in actual.names:
            raise SchemaError(f"{table_name}: missing column '{name}' (has: {', '.join(actual.names)})")
    for field in expected:
        if field.name not in actual.names:
            continue
        got = actual.field(field.name).type
        if not _compatible(got, field.type):
            raise SchemaError(f"{table_name}: column '{field.name}' has type {got}, expected {field.type}")


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if got == want:
        return True
    if pa.types.is_null(got):
        return True
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(want) for f in numeric) and any(f(got) for f in numeric):
        return True
    if pa.types.is_string(want) and (pa.types.is_large_string(got) or pa.types.is_string(got)):
        return True
    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(f(want) for f in list_types) and any(f(got) for f in list_types):
        return _compatible(got.value_type, want.value_type)
    return False


def validate_manifest(schema: pa.Schema, table_name: str = "manifest", need_location: bool = True) -> None:
    """Columns and types of a manifest; ``need_location=False`` for photos to geolocate (no lat/lng needed)."""
    check_columns(table_name, schema, MANIFEST, MANIFEST_REQUIRED if need_location else (c.PHOTO_ID,))
    if c.IMAGE_URI not in schema.names and c.EMBEDDING not in schema.names:
        raise SchemaError(f"{table_name}: needs an '{c.IMAGE_URI}' or an '{c.EMBEDDING}' column")


def check_no_nulls(table_name: str, table: pa.Table, expected: pa.Schema) -> None:
    """Raise SchemaError naming the first non-nullable column of ``expected`` that holds a null, and its row."""
    for field in expected:
        if field.nullable or field.name not in table.column_names:
            continue
        column = table.column(field.name)
        if column.null_count:
            row = int(column.is_null().to_numpy(zero_copy_only=False).argmax())
            raise SchemaError(f"{table_name}: column '{field.name}' is null at row {row} ({column.null_count} nulls)")


def validate_features(
    table: pa.Table, embedding_dim: int | None = None, table_name: str = "features", need_location: bool = True
) -> None:
    """Whole-table check for artifacts that must already be clean (written by our own jobs).

    ``need_location=False`` accepts null lat/lng (features of photos to geolocate); values present are still
    range-checked.
    """
    check_columns(table_name, table.schema, FEATURES)
    check_no_nulls(table_name, table, FEATURES)
    import numpy as np
    import pyarrow.compute as pc

    for name, limit in ((c.LAT, 90), (c.LNG, 180)):
        column = table.column(name)
        if need_location and column.null_count:
            row = int(column.is_null().to_numpy(zero_copy_only=False).argmax())
            raise SchemaError(f"{table_name}: column '{name}' is null at row {row} ({column.null_count} nulls)")
        values = column.to_numpy(zero_copy_only=False)  # nulls -> NaN
        present = ~column.is_null().to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad = present & (~np.isfinite(values) | (np.abs(values) > limit))
        if bad.any():
            raise SchemaError(f"{table_name}: column '{name}' out of range at row {int(np.argmax(bad))}")
    if embedding_dim is not None and table.num_rows:
        lengths = pc.list_value_length(table.column(c.EMBEDDING)).to_numpy(zero_copy_only=False)
        wrong = lengths != embedding_dim
        if wrong.any():
            i = int(np.argmax(wrong))
            raise SchemaError(
                f"{table_name}: column '{c.EMBEDDING}' has length {int(lengths[i])} at row {i}, expected {embedding_dim}"
            )


def validate_cells(table: pa.Table, table_name: str = "cells") -> None:
    check_columns(table_name, table.schema, CELLS)
    check_no_nulls(table_name, table, CELLS)
    ids = table.column(c.CELL_ID).to_numpy(zero_copy_only=False)
    if len(ids) != len(set(ids.tolist())):
        raise SchemaError(f"{table_name}: column '{c.CELL_ID}' has duplicate ids")


def row_problem(
    row: Mapping, embedding_dim: int | None = None, need_embedding: bool = False, need_location: bool = True
) -> tuple[str, str] | None:
    """Return (reason, detail) for a manifest/features row that must go to the dead letters, else None.

    Row-level twin of the table validators, used inside Beam DoFns so that one bad row never fails a job.
    """
    photo_id = row.get(c.PHOTO_ID)
    if photo_id is None or str(photo_id) == "":
        return Reason.MISSING_PHOTO_ID, "photo_id is empty"
    # Photos to geolocate have no location yet; only training data needs one.
    if need_location:
        lat, lng = row.get(c.LAT), row.get(c.LNG)
        if lat is None or lng is None or lat == "" or lng == "":
            return Reason.MISSING_LATLNG, f"lat={lat!r} lng={lng!r}"
        try:
            lat, lng = float(lat), float(lng)
        except (TypeError, ValueError):
            return Reason.MISSING_LATLNG, f"lat={lat!r} lng={lng!r} are not numbers"
        if math.isnan(lat) or math.isnan(lng) or math.isinf(lat) or math.isinf(lng):
            return Reason.NAN_LATLNG, f"lat={lat} lng={lng}"
        if not -90.0 <= lat <= 90.0:
            return Reason.LAT_OUT_OF_RANGE, f"lat={lat} not in [-90, 90]"
        if not -180.0 <= lng <= 180.0:
            return Reason.LNG_OUT_OF_RANGE, f"lng={lng} not in [-180, 180]"
    embedding = row.get(c.EMBEDDING)
    if embedding is None:
        if need_embedding:
            return Reason.MISSING_EMBEDDING, "embedding is empty"
        return None
    if isinstance(embedding, str | bytes) or not hasattr(embedding, "__len__"):
        return Reason.NAN_EMBEDDING, f"embedding is a {type(embedding).__name__}, not a list of numbers"
    n = len(embedding)
    if embedding_dim is not None and n != embedding_dim:
        return Reason.BAD_EMBEDDING_LENGTH, f"embedding has length {n}, expected {embedding_dim}"
    import numpy as np

    try:
        finite = np.isfinite(np.asarray(embedding, dtype=np.float64)).all()
    except (TypeError, ValueError):
        return Reason.NAN_EMBEDDING, "embedding holds values that are not numbers"
    if not finite:
        return Reason.NAN_EMBEDDING, "embedding holds NaN or inf"
    return None


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
        row = batch.slice(int(i), 1).to_pylist()[0]
        problem = row_problem(row, embedding_dim, need_embedding=need_embedding, need_location=need_location)
        if problem is not None:
            problems[int(i)] = problem
    return problems
