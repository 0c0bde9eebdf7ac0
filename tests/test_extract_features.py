"""extract_features end to end on real JPEG/PNG bytes with a random-weight Inception v3 backbone."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import extract_features as ef
from schemas import FEATURES, Reason, SchemaError, check_columns
from schemas import columns as c
from schemas.io import read_table


def _image(rng, size, mode="RGB") -> Image.Image:
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(), mode=mode)


def test_extracts_features_and_dead_letters_bad_images(tmp_path, backbone_path):
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    good = {
        "jpeg": (_image(rng, (320, 240)), "JPEG"),
        "png": (_image(rng, (100, 160)), "PNG"),
        "gray": (_image(rng, (64, 64), mode="L"), "JPEG"),
    }
    for name, (image, fmt) in good.items():
        image.save(images / f"{name}.img", format=fmt)
    jpeg_bytes = (images / "jpeg.img").read_bytes()
    (images / "truncated.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 3])
    (images / "text.png").write_bytes(b"this is not an image")
    rows = [
        ("jpeg", 48.85, 2.35, images / "jpeg.img"),
        ("png", -33.86, 151.2, images / "png.img"),
        ("gray", 40.7, -74.0, images / "gray.img"),
        ("missing", 1.0, 1.0, images / "nope.jpg"),
        ("truncated", 2.0, 2.0, images / "truncated.jpg"),
        ("text", 3.0, 3.0, images / "text.png"),
        ("badlat", 123.0, 3.0, images / "jpeg.img"),
        ("jpeg", 10.0, 10.0, images / "png.img"),  # repeated photo_id: the first row wins
    ]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=[c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI]).to_csv(manifest, index=False)
    out = tmp_path / "features"
    summary = ef.run(
        [f"--manifest={manifest}", f"--output={out}", f"--backbone_model={backbone_path}", "--direct_num_workers=1",
         "--max_dead_letter_fraction=1"]  # 5 of 8 rows are bad on purpose
    )
    assert summary.rows_in == 8 and summary.rows_out == 3 and summary.balanced
    assert summary.dead_letters == {
        Reason.MISSING_FILE: 1,
        Reason.UNREADABLE_IMAGE: 1,
        Reason.NOT_AN_IMAGE: 1,
        Reason.LAT_OUT_OF_RANGE: 1,
        Reason.DUPLICATE_PHOTO_ID: 1,
    }
    table = read_table(str(out))
    check_columns("features", table.schema, FEATURES)
    got = table.to_pandas().set_index(c.PHOTO_ID)
    assert sorted(got.index) == ["gray", "jpeg", "png"]
    assert got.loc["jpeg", c.LAT] == 48.85 and got.loc["png", c.LNG] == 151.2

    model = keras.saving.load_model(backbone_path)
    for name in good:
        pixels = np.asarray(Image.open(images / f"{name}.img").convert("RGB").resize((299, 299), Image.BILINEAR))
        want = model.predict(pixels[None].astype(np.float32), verbose=0)[0]
        embedding = np.asarray(got.loc[name, c.EMBEDDING])
        assert embedding.shape == (2048,)
        np.testing.assert_allclose(embedding, want, rtol=1e-4, atol=1e-4)

    dead = read_table(f"{out}.dead_letters").to_pandas().set_index(c.PHOTO_ID)
    assert dead.loc["missing", c.REASON] == Reason.MISSING_FILE
    assert dead.loc["truncated", c.REASON] == Reason.UNREADABLE_IMAGE
    assert dead.loc["text", c.REASON] == Reason.NOT_AN_IMAGE
    assert dead.loc["badlat", c.REASON] == Reason.LAT_OUT_OF_RANGE
    assert dead.loc["jpeg", c.REASON] == Reason.DUPLICATE_PHOTO_ID
    assert "png.img" in dead.loc["jpeg", c.RECORD]  # the second row went, the first was kept


def test_manifest_with_embeddings_is_passed_through(tmp_path):
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = pa.table(
        {
            c.PHOTO_ID: ["a", "b", "c", "d"],
            c.LAT: [1.0, 2.0, 3.0, 4.0],
            c.LNG: [5.0, 6.0, 7.0, 8.0],
            c.EMBEDDING: pa.array([list(r) for r in emb[:3]] + [[1.0, 2.0]], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "manifest.parquet")
    out = tmp_path / "features"
    summary = ef.run([f"--manifest={tmp_path / 'manifest.parquet'}", f"--output={out}", "--direct_num_workers=1"])
    assert (summary.rows_in, summary.rows_out, summary.dead_letters) == (4, 3, {Reason.BAD_EMBEDDING_LENGTH: 1})
    got = read_table(str(out)).to_pandas().sort_values(c.PHOTO_ID)
    np.testing.assert_array_equal(np.stack(got[c.EMBEDDING].to_numpy()), emb[:3])


def test_images_without_a_backbone_are_refused_at_launch(tmp_path):
    pd.DataFrame({c.PHOTO_ID: ["a"], c.LAT: [1.0], c.LNG: [2.0], c.IMAGE_URI: ["x.jpg"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    from schemas.cli import UsageError

    with pytest.raises(UsageError, match="has no embeddings: give --backbone_weights"):
        ef.run([f"--manifest={tmp_path / 'm.csv'}", f"--output={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_photos_to_geolocate_through_a_keras_backbone(tmp_path, tiny_backbone_path):
    """A manifest without lat/lng (photos to geolocate), a user's .keras backbone, a bomb among the photos."""
    import json

    import imagery
    from schemas import validate_features
    from tests import photo_files as pf

    photos = {
        "real": pf.BUNDLED_PHOTOS / "npm__jpeg-exif-1.1.4__package__test__IMG_0001.JPG",  # EXIF orientation 6
        "heic": pf.BUNDLED_PHOTOS / "pypi-sdist__pillow_heif-1.8.1__tests__images__heif_special__xiaomi.heic",
        "tiff16": pf.BUNDLED_PHOTOS / "pypi-sdist__pillow-13.0.0__Tests__images__ifd_tag_type.tiff",
        "bomb": pf.write(tmp_path, "bomb.png", pf.bomb_png()),
        "text": pf.write(tmp_path, "text.jpg", b"not a photo"),
    }
    manifest = tmp_path / "to_locate.csv"
    pd.DataFrame({c.PHOTO_ID: list(photos), c.IMAGE_URI: [str(p) for p in photos.values()]}).to_csv(manifest, index=False)
    out = tmp_path / "features"
    summary = ef.run(
        [f"--manifest={manifest}", f"--output={out}", f"--backbone={tiny_backbone_path}", "--direct_num_workers=1"]
    )
    assert (summary.rows_in, summary.rows_out) == (5, 3) and summary.balanced
    assert summary.dead_letters == {Reason.TOO_MANY_PIXELS: 1, Reason.NOT_AN_IMAGE: 1}
    table = read_table(str(out))
    validate_features(table, embedding_dim=8, need_location=False)
    with pytest.raises(SchemaError, match="'lat' is null"):
        validate_features(table, embedding_dim=8)
    got = table.to_pandas().set_index(c.PHOTO_ID)
    assert got[c.LAT].isna().all() and got[c.LNG].isna().all()
    model = keras.saving.load_model(tiny_backbone_path)
    for name in ("real", "heic", "tiff16"):
        want = model.predict(imagery.load_image(photos[name].read_bytes())[None], verbose=0)[0]
        np.testing.assert_allclose(np.asarray(got.loc[name, c.EMBEDDING]), want, rtol=1e-5, atol=1e-5)
    info = json.loads((out / ef.BACKBONE_INFO_FILE).read_text())
    assert info["backbone"] == str(tiny_backbone_path) and info["weights"] == str(tiny_backbone_path)
    assert info["feature_dim"] == 8 and len(info["weights_sha256"]) == 64


def test_extract_features_with_a_bomb_stays_under_1_gb(tmp_path, tiny_backbone_path):
    import os
    import subprocess
    import sys

    from tests import photo_files as pf

    bomb = pf.write(tmp_path, "bomb.png", pf.bomb_png())
    ok = pf.write(tmp_path, "ok.jpg", pf.jpeg())
    pd.DataFrame({c.PHOTO_ID: ["bomb", "ok"], c.IMAGE_URI: [str(bomb), str(ok)]}).to_csv(tmp_path / "m.csv", index=False)
    code = (
        "import sys\n"
        "from pipelines import extract_features\n"
        "extract_features.run(sys.argv[1:])\n"
    ) + pf.PRINT_PEAK_RSS
    run = subprocess.run(
        [sys.executable, "-c", code, "--manifest=m.csv", "--output=features", f"--backbone={tiny_backbone_path}"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(pf.REPO)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rows in 2, rows out 1, dead letters 1 (too_many_pixels 1); balanced" in run.stdout
    max_rss_kb = pf.peak_rss_kb(run.stdout)
    assert max_rss_kb < 1024 * 1024, f"peak RSS {max_rss_kb / 1024:.0f} MB"


def test_unusable_backbones_are_refused_at_launch_in_one_line(tmp_path, monkeypatch):
    from trainer import backbone

    pd.DataFrame({c.PHOTO_ID: ["a"], c.IMAGE_URI: ["x.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    # No Keras cache and no network: one line saying what to do, at once.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(backbone, "_keras_cache_dirs", lambda: [str(tmp_path / "keras_home" / "models")])
    monkeypatch.setattr(backbone, "_reachable", lambda host, port=443, timeout=3.0: False)
    for flags, says in [
        (["--backbone_weights=imagenet"], "not in the Keras cache"),
        ([f"--backbone={tmp_path / 'nope.keras'}"], "no such file"),
        (["--backbone=resnet50"], "give 'inception_v3' or a path to a .keras model"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            ef.run([f"--manifest={tmp_path / 'm.csv'}", f"--output={tmp_path / 'out'}", *flags])
        message = str(exit_.value)
        assert message.startswith("--backbone") and says in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_embeddings_of_photos_to_geolocate_pass_through_without_locations(tmp_path):
    emb = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({c.PHOTO_ID: ["a", "b", "c"], c.EMBEDDING: emb}), tmp_path / "no_location.parquet")
    # With lat/lng columns, one of them bad: required (training) vs not read (--no_require_location).
    located = pa.table({c.PHOTO_ID: ["a", "b", "c"], c.LAT: [1.0, None, 99.0], c.LNG: [2.0, 3.0, 4.0], c.EMBEDDING: emb})
    pq.write_table(located, tmp_path / "located.parquet")
    runs = {
        "no_location": ([], (3, 0)),
        "located": ([], (1, 2)),
        "located_to_locate": (["--no_require_location"], (3, 0)),
    }
    for name, (flags, (rows_out, dead)) in runs.items():
        source = tmp_path / f"{name.replace('_to_locate', '')}.parquet"
        out = tmp_path / name
        # 2 of 3 rows are bad on purpose in "located": allow that share of dead letters.
        summary = ef.run([f"--manifest={source}", f"--output={out}", "--direct_num_workers=1",
                          "--max_dead_letter_fraction=1", *flags])
        assert (summary.rows_out, summary.dead_total) == (rows_out, dead) and summary.balanced, name
        table = read_table(str(out))
        check_columns("features", table.schema, FEATURES)
        if name != "located":
            assert table.column(c.LAT).null_count == table.column(c.LNG).null_count == 3
