"""Every kind of bad input reaches the dead letters with its reason, and rows in = rows out + dead letters."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipelines import bucket_cells, extract_features
from schemas import DEAD_LETTERS, Reason, check_columns
from schemas import columns as c
from schemas.io import SUCCESS_MARKER, read_table

DIM = 4
NAN = float("nan")

# photo_id, lat, lng, embedding, the reason it must be rejected with (None: a good row)
FEATURE_ROWS = [
    ("good1", 10.0, 20.0, [1.0, 2.0, 3.0, 4.0], None),
    ("nolat", None, 20.0, [1.0] * DIM, Reason.MISSING_LATLNG),
    ("nolng", 10.0, None, [1.0] * DIM, Reason.MISSING_LATLNG),
    ("nanlat", NAN, 20.0, [1.0] * DIM, Reason.NAN_LATLNG),
    ("inflng", 10.0, float("inf"), [1.0] * DIM, Reason.NAN_LATLNG),
    ("farnorth", 90.5, 20.0, [1.0] * DIM, Reason.LAT_OUT_OF_RANGE),
    ("fareast", 10.0, 180.01, [1.0] * DIM, Reason.LNG_OUT_OF_RANGE),
    ("short", 10.0, 20.0, [1.0] * (DIM - 1), Reason.BAD_EMBEDDING_LENGTH),
    ("long", 10.0, 20.0, [1.0] * (DIM + 5), Reason.BAD_EMBEDDING_LENGTH),
    ("nanemb", 10.0, 20.0, [1.0, NAN, 1.0, 1.0], Reason.NAN_EMBEDDING),
    ("noemb", 10.0, 20.0, None, Reason.MISSING_EMBEDDING),
    ("", 10.0, 20.0, [1.0] * DIM, Reason.MISSING_PHOTO_ID),
    ("good2", -33.9, 151.2, [4.0, 3.0, 2.0, 1.0], None),
    ("good1", 11.0, 21.0, [9.0] * DIM, Reason.DUPLICATE_PHOTO_ID),
    ("edge", -90.0, -180.0, [0.0] * DIM, None),  # the limits themselves are valid
]


def _assert_accounted(summary, n_in, out_rows, dead_table):
    assert summary.rows_in == n_in
    assert summary.rows_out == out_rows
    assert summary.dead_total == dead_table.num_rows
    assert summary.rows_in == summary.rows_out + summary.dead_total
    check_columns("dead_letters", dead_table.schema, DEAD_LETTERS)


def test_bucket_cells_dead_letters_every_bad_feature_row(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    table = pa.table(
        {
            c.PHOTO_ID: [r[0] for r in FEATURE_ROWS],
            c.LAT: pa.array([r[1] for r in FEATURE_ROWS], pa.float64()),
            c.LNG: pa.array([r[2] for r in FEATURE_ROWS], pa.float64()),
            c.EMBEDDING: pa.array([r[3] for r in FEATURE_ROWS], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, features / "part-0.parquet", row_group_size=4)
    (features / SUCCESS_MARKER).touch()
    out = tmp_path / "out"
    summary = bucket_cells.run(
        [f"--features={features}", f"--output={out}", f"--embedding_dim={DIM}", "--direct_num_workers=1"]
    )
    dead = read_table(str(out / "dead_letters"))
    good = [r for r in FEATURE_ROWS if r[4] is None]
    _assert_accounted(summary, len(FEATURE_ROWS), len(good), dead)
    got = sorted((d[c.PHOTO_ID], d[c.REASON]) for d in dead.to_pylist())
    want = sorted((r[0], r[4]) for r in FEATURE_ROWS if r[4] is not None)
    assert got == want
    assert summary.dead_letters == pd.Series([r[4] for r in FEATURE_ROWS if r[4]]).value_counts().to_dict()
    # The record is the original row, replayable: the rejected duplicate is the second "good1".
    duplicate = next(d for d in dead.to_pylist() if d[c.REASON] == Reason.DUPLICATE_PHOTO_ID)
    assert json.loads(duplicate[c.RECORD])[c.LAT] == 11.0
    assert "row 0" in duplicate[c.DETAIL]
    photos = read_table(str(out / "photos")).to_pandas()
    assert sorted(photos[c.PHOTO_ID]) == sorted(r[0] for r in good)
    assert photos.set_index(c.PHOTO_ID).loc["good1", c.LAT] == 10.0


def test_text_manifest_values_that_are_not_numbers(tmp_path):
    manifest = tmp_path / "features.csv"
    manifest.write_text(
        "photo_id,lat,lng,embedding\n"
        'a,1.5,2.5,"[1, 2, 3, 4]"\n'
        'b,north,2.5,"[1, 2, 3, 4]"\n'
        'c,,2.5,"[1, 2, 3, 4]"\n'
        'd,nan,2.5,"[1, 2, 3, 4]"\n'
        'e,1.5,2.5,"[1, 2, x, 4]"\n'
    )
    out = tmp_path / "out"
    summary = bucket_cells.run([f"--features={manifest}", f"--output={out}", "--direct_num_workers=1"])
    dead = read_table(str(out / "dead_letters"))
    _assert_accounted(summary, 5, 1, dead)
    assert sorted((d[c.PHOTO_ID], d[c.REASON]) for d in dead.to_pylist()) == [
        ("b", Reason.MISSING_LATLNG),
        ("c", Reason.MISSING_LATLNG),
        ("d", Reason.NAN_LATLNG),
        ("e", Reason.NAN_EMBEDDING),
    ]


def test_extract_features_dead_letters_every_bad_image_row(tmp_path, backbone_path):
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "ok.jpg", format="JPEG")
    Image.fromarray(pixels).save(images / "ok.png", format="PNG")
    png = (images / "ok.png").read_bytes()
    (images / "cut.png").write_bytes(png[: len(png) // 2])
    (images / "zero.jpg").write_bytes(b"")
    (images / "noise.jpg").write_bytes(np.random.default_rng(1).bytes(4000))
    rows = [
        ("ok1", 1.0, 2.0, str(images / "ok.jpg"), None),
        ("ok2", 3.0, 4.0, str(images / "ok.png"), None),
        ("gone", 1.0, 2.0, str(images / "missing.jpg"), Reason.MISSING_FILE),
        ("gonedir", 1.0, 2.0, str(tmp_path / "nodir" / "x.png"), Reason.MISSING_FILE),
        ("nouri", 1.0, 2.0, None, Reason.MISSING_FILE),
        ("cut", 1.0, 2.0, str(images / "cut.png"), Reason.UNREADABLE_IMAGE),
        ("zero", 1.0, 2.0, str(images / "zero.jpg"), Reason.NOT_AN_IMAGE),
        ("noise", 1.0, 2.0, str(images / "noise.jpg"), Reason.NOT_AN_IMAGE),
        ("nolat", None, 2.0, str(images / "ok.jpg"), Reason.MISSING_LATLNG),
        ("nanlng", 1.0, NAN, str(images / "ok.jpg"), Reason.NAN_LATLNG),
        ("badlng", 1.0, -181.0, str(images / "ok.jpg"), Reason.LNG_OUT_OF_RANGE),
        ("ok1", 5.0, 6.0, str(images / "ok.png"), Reason.DUPLICATE_PHOTO_ID),
    ]
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(
        pa.table(
            {
                c.PHOTO_ID: [r[0] for r in rows],
                c.LAT: pa.array([r[1] for r in rows], pa.float64()),
                c.LNG: pa.array([r[2] for r in rows], pa.float64()),
                c.IMAGE_URI: pa.array([r[3] for r in rows], pa.string()),
            }
        ),
        manifest,
    )
    out = tmp_path / "features"
    summary = extract_features.run(
        [f"--manifest={manifest}", f"--output={out}", f"--backbone_model={backbone_path}", "--direct_num_workers=1"]
    )
    dead = read_table(f"{out}.dead_letters")
    _assert_accounted(summary, len(rows), 2, dead)
    got = sorted((d[c.PHOTO_ID], d[c.REASON]) for d in dead.to_pylist())
    assert got == sorted((r[0], r[4]) for r in rows if r[4] is not None)
    assert read_table(str(out)).num_rows == 2
