"""imagery: the one image preprocessing and EXIF reading, on the bundled real photos and generated cases."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

import imagery
from imagery import ImageError
from schemas import Reason
from tests import photo_files as pf

FOLDERS = [pf.BUNDLED_PHOTOS] + ([pf.SHARED_PHOTOS] if pf.SHARED_PHOTOS.is_dir() else [])


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.parent.parent.name + "/photos")
def test_real_photos_decode_and_their_gps_equals_the_reference_table(folder):
    table = pf.photo_table(folder)
    files = pf.photo_files(folder)
    assert sorted(p.name for p in files) == sorted(table)
    formats = set()
    for path in files:
        data = path.read_bytes()
        row = table[path.name]
        if row["decodes"] == "ok":
            pixels = imagery.load_image(data)
            assert pixels.shape == (299, 299, 3) and pixels.dtype == np.float32
            assert 0 <= pixels.min() and pixels.max() <= 255
            # Upright size: the stored size, turned for EXIF orientations 5-8.
            width, height = imagery.decode_rgb(data).size
            assert {width, height} == {int(row["width"]), int(row["height"])}
            formats.add(Image.open(io.BytesIO(data)).format)
        else:
            with pytest.raises(ImageError) as error:
                imagery.load_image(data)
            assert error.value.reason == Reason.UNREADABLE_IMAGE
        lat, lng = imagery.read_gps(data)
        assert abs(lat - float(row["lat"])) < 1e-7 and abs(lng - float(row["lng"])) < 1e-7, path.name
        meta = imagery.read_metadata(data)
        assert (meta.lat, meta.lng, meta.gps_problem) == (lat, lng, None)
    assert {"JPEG", "HEIF", "TIFF"} <= formats


def test_taken_at_and_camera_of_real_photos():
    nikon = imagery.read_metadata((pf.BUNDLED_PHOTOS / "exif-samples__jpg__gps__DSCN0010.jpg").read_bytes())
    assert (nikon.taken_at, nikon.camera) == ("2008-10-22T16:28:39", "NIKON COOLPIX P6000")
    iphone = imagery.read_metadata((pf.BUNDLED_PHOTOS / "exif-samples__heic__IMG_5195.HEIC").read_bytes())
    assert (iphone.taken_at, iphone.camera) == ("2021-04-11T15:47:53-05:00", "Apple iPhone 11 Pro Max")
    assert iphone.lng < 0  # a W reference in a HEIC
    kodak = imagery.read_metadata((pf.BUNDLED_PHOTOS / "exif-samples__jpg__Kodak_CX7530.jpg").read_bytes())
    assert kodak.lat < 0  # an S reference


def test_real_photo_with_orientation_6_is_turned_upright():
    data = (pf.BUNDLED_PHOTOS / "npm__jpeg-exif-1.1.4__package__test__IMG_0001.JPG").read_bytes()
    stored = Image.open(io.BytesIO(data))
    assert stored.getexif()[pf.ORIENTATION] == 6
    raw = np.asarray(stored.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(imagery.decode_rgb(data)), np.rot90(raw, k=-1))


def _upright(height=30, width=40) -> np.ndarray:
    # Every pixel different, so any wrong flip or turn shows.
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y * 8, x * 6, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("orientation, turns", [(6, 1), (8, -1)])
def test_exif_orientation_gives_the_upright_pixels(orientation, turns):
    """Orientation 6: the camera was turned, the stored pixels are the upright photo turned 90 degrees
    anticlockwise, and the viewer turns them clockwise back (8: the other way round)."""
    upright = _upright()
    stored = np.ascontiguousarray(np.rot90(upright, k=turns))
    data = pf.png(Image.fromarray(stored), pf.exif_bytes(orientation=orientation))
    decoded = np.asarray(imagery.decode_rgb(data))
    np.testing.assert_array_equal(decoded, upright)
    # The same photo through the one resize equals the upright photo resized.
    want = np.asarray(Image.fromarray(upright).resize((64, 64), imagery.RESAMPLE), dtype=np.float32)
    np.testing.assert_array_equal(imagery.load_image(data, size=64), want)
    # A JPEG (lossy): compared with the manual turn of its own stored pixels.
    jpeg = pf.jpeg(stored, pf.exif_bytes(orientation=orientation), quality=95)
    raw = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(imagery.decode_rgb(jpeg)), np.rot90(raw, k=-turns))


def test_lossless_rgb_at_the_target_size_is_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, size=(299, 299, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imagery.load_image(pf.png(Image.fromarray(pixels))), pixels.astype(np.float32))


def _full_decode_then_resize(data: bytes, size: int = 299) -> np.ndarray:
    """The reference without JPEG draft: Pillow's full-size decode, upright, RGB, the one BILINEAR resize."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(upright.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _photo_like_jpeg(width: int, height: int, seed: int, exif: Image.Exif | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noisy = np.clip(np.asarray(small, np.int16) + rng.integers(-12, 13, (height, width, 1)), 0, 255).astype(np.uint8)
    return pf.jpeg(noisy, exif, quality=90)


def test_big_jpegs_are_decoded_at_a_reduced_scale_within_tolerance_of_a_full_decode():
    """JPEG draft: a 12-megapixel photo is decoded at 1/4 scale (both sides still >= 2 x 299), and the pixels
    load_image gives stay within a few levels of a full decode + the same resize (real photos and generated ones,
    one of them turned by EXIF orientation 6)."""
    big = _photo_like_jpeg(4032, 3024, seed=1)
    assert imagery.decode_rgb(big).size == (4032, 3024)
    assert imagery.decode_rgb(big, at_least=598).size == (1008, 756)
    assert imagery.decode_rgb(big, at_least=2000).size == (4032, 3024)  # never below the request
    cases = [big, _photo_like_jpeg(1600, 1200, seed=2), _photo_like_jpeg(2448, 3264, seed=3, exif=pf.exif_bytes(orientation=6))]
    for folder in FOLDERS:
        cases += [p.read_bytes() for p in pf.photo_files(folder) if p.suffix.lower() in (".jpg", ".jpeg")]
    reduced = 0
    for data in cases:
        try:
            reference = _full_decode_then_resize(data)
        except OSError:  # the deliberately truncated real photo: load_image's own test covers it
            continue
        pixels = imagery.load_image(data)
        difference = np.abs(pixels - reference)
        assert difference.mean() < 0.5 and difference.max() <= 12, (difference.mean(), difference.max())
        reduced += imagery.decode_rgb(data, at_least=598).size != imagery.decode_rgb(data).size
    assert reduced >= 3  # the draft path was really taken, not only full decodes compared with themselves
    turned = imagery.load_image(cases[2])
    np.testing.assert_allclose(turned, _full_decode_then_resize(cases[2]), atol=12)


def test_every_mode_becomes_rgb():
    size = 8

    def load(image: Image.Image, fmt: str = "PNG") -> np.ndarray:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return imagery.load_image(buffer.getvalue(), size=size)

    grey = load(Image.new("L", (size, size), 77))
    assert (grey == 77).all()
    assert (load(Image.new("1", (size, size), 1)) == 255).all()
    # 16-bit grey: 0..65535 -> 0..255.
    sixteen = Image.fromarray(np.full((size, size), 257 * 100, dtype=np.uint16), mode="I;16")
    assert sixteen.mode == "I;16" and (load(sixteen) == 100).all()
    assert (load(Image.fromarray(np.full((size, size), 65535, dtype=np.uint16), mode="I;16")) == 255).all()
    # 32-bit integer grey (TIFF keeps mode I).
    assert (load(Image.fromarray(np.full((size, size), 257 * 50, dtype=np.int32), mode="I"), "TIFF") == 50).all()
    # CMYK: no ink is white, full cyan is (0, 255, 255).
    assert (load(Image.new("CMYK", (size, size), (0, 0, 0, 0)), "JPEG") >= 250).all()
    np.testing.assert_array_equal(load(Image.new("CMYK", (size, size), (255, 0, 0, 0)), "TIFF")[0, 0], [0, 255, 255])
    # Alpha is composited on white: transparent -> white, opaque -> the colour, half -> between.
    assert (load(Image.new("RGBA", (size, size), (10, 20, 30, 0))) == 255).all()
    np.testing.assert_array_equal(load(Image.new("RGBA", (size, size), (10, 20, 30, 255)))[0, 0], [10, 20, 30])
    np.testing.assert_allclose(load(Image.new("RGBA", (size, size), (0, 0, 0, 128)))[0, 0], [127, 127, 127], atol=1)
    assert (load(Image.new("LA", (size, size), (0, 0))) == 255).all()
    # Palette, with and without a transparent entry.
    palette = Image.new("P", (size, size), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    np.testing.assert_array_equal(load(palette)[0, 0], [200, 100, 50])
    palette.info["transparency"] = 1
    assert (load(palette) == 255).all()


def test_files_that_are_not_images_or_are_broken():
    cases = {
        b"": Reason.NOT_AN_IMAGE,
        b"lat,lng\n1,2\n": Reason.NOT_AN_IMAGE,  # a text file named .jpg
        pf.jpeg()[:300]: Reason.UNREADABLE_IMAGE,  # truncated JPEG
        pf.png(Image.new("RGB", (50, 50)))[:-30]: Reason.UNREADABLE_IMAGE,
    }
    for data, reason in cases.items():
        with pytest.raises(ImageError) as error:
            imagery.load_image(data)
        assert error.value.reason == reason, data[:20]


def test_too_many_pixels_is_refused_from_the_header():
    with pytest.raises(ImageError) as error:
        imagery.load_image(pf.bomb_png())
    assert error.value.reason == Reason.TOO_MANY_PIXELS
    # Just over the limit: refused by our check (Pillow itself would only warn).
    with pytest.raises(ImageError) as error:
        imagery.load_image(pf.bomb_png(10_000, imagery.MAX_PIXELS // 10_000 + 1))
    assert error.value.reason == Reason.TOO_MANY_PIXELS and "limit" in error.value.detail
    # A lower limit applies to ordinary photos too.
    with pytest.raises(ImageError) as error:
        imagery.load_image(pf.jpeg(), max_pixels=100)
    assert error.value.reason == Reason.TOO_MANY_PIXELS


def test_decompression_bomb_costs_no_memory(tmp_path):
    bomb = pf.write(tmp_path, "bomb.png", pf.bomb_png())
    assert bomb.stat().st_size < 20_000
    code = (
        "import sys, imagery\n"
        "try:\n    imagery.load_image(open(sys.argv[1], 'rb').read())\n"
        "except imagery.ImageError as e:\n    print(e.reason)\n"
    ) + pf.PRINT_PEAK_RSS
    env = dict(os.environ, PYTHONPATH=str(pf.REPO))
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[0] == Reason.TOO_MANY_PIXELS
    assert pf.peak_rss_kb(out.stdout) < 1024 * 1024  # < 1 GB peak; decoding would need 10.8 GB


def _gps(**kwargs) -> bytes:
    return pf.jpeg(exif=pf.exif_bytes(**kwargs))


def test_gps_signs_and_precision_against_pillow():
    for lat, lng, lat_ref, lng_ref in [(33.8675, 151.207, "S", "E"), (40.7128, 74.006, "N", "W"), (0.5, 0.25, "S", "W")]:
        data = _gps(lat=lat, lng=lng, lat_ref=lat_ref, lng_ref=lng_ref)
        got = imagery.read_gps(data)
        want = pf.pillow_gps(data)
        assert got[0] < 0 if lat_ref == "S" else got[0] > 0
        assert got[1] < 0 if lng_ref == "W" else got[1] > 0
        np.testing.assert_allclose(got, want, atol=1e-9)
        np.testing.assert_allclose(np.abs(got), [lat, lng], atol=1e-6)


def test_gps_problems_have_their_reasons():
    r = pf.IFDRational
    cases = [
        (pf.jpeg(), Reason.NO_EXIF),
        (pf.jpeg(exif=pf.exif_bytes(make="Canon", model="Canon EOS 5D")), Reason.NO_GPS),
        (_gps(lat=48.5), Reason.NO_GPS),
        (_gps(lat=(r(0, 1), r(0, 1), r(0, 1)), lng=(r(0, 1), r(0, 1), r(0, 1))), Reason.GPS_OUT_OF_RANGE),
        (_gps(lat=(r(95, 1), r(0, 1), r(0, 1)), lng=2.0), Reason.GPS_OUT_OF_RANGE),
        (_gps(lat=10.0, lng=(r(181, 1), r(0, 1), r(0, 1))), Reason.GPS_OUT_OF_RANGE),
        (_gps(lat=(r(48, 1), r(30, 1), r(0, 0)), lng=2.0), Reason.MALFORMED_GPS),  # zero denominator
        (_gps(lat=(r(48, 1), r(75, 1), r(0, 1)), lng=2.0), Reason.MALFORMED_GPS),  # 75 minutes
        (_gps(lat=48.5, lng=2.0, lat_ref=None), Reason.MALFORMED_GPS),  # no N/S
        (_gps(lat=48.5, lng=2.0, lng_ref="X"), Reason.MALFORMED_GPS),
    ]
    for data, reason in cases:
        with pytest.raises(ImageError) as error:
            imagery.read_gps(data)
        assert error.value.reason == reason, error.value.detail
        meta = imagery.read_metadata(data)
        assert meta.lat is None and meta.gps_problem[0] == reason
    # A GPS on the equator or the prime meridian alone is a place, not "no fix".
    assert imagery.read_gps(_gps(lat=0.0, lng=2.5)) == (0.0, 2.5)


def test_taken_at_and_camera():
    data = _gps(lat=1.0, lng=2.0, make="Canon", model="Canon EOS 5D", taken="2020:01:02 03:04:05", offset="+02:00")
    meta = imagery.read_metadata(data)
    assert (meta.taken_at, meta.camera) == ("2020-01-02T03:04:05+02:00", "Canon EOS 5D")
    meta = imagery.read_metadata(_gps(lat=1.0, lng=2.0, make="NIKON  ", model="D70", taken="0000:00:00 00:00:00"))
    assert (meta.taken_at, meta.camera) == (None, "NIKON D70")
    meta = imagery.read_metadata(_gps(lat=1.0, lng=2.0))
    assert (meta.taken_at, meta.camera) == (None, None)


def test_image_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(ImageError(Reason.NO_GPS, "EXIF without GPSLatitude")))
    assert (error.reason, error.detail) == (Reason.NO_GPS, "EXIF without GPSLatitude")
    assert json.dumps(str(error))
