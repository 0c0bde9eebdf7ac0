"""ingest_photos: every image file is one manifest row or one dead letter, on real photos and generated cases."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import common
from pipelines import ingest_photos as ip
from schemas import PHOTOS, Reason, check_columns
from schemas import columns as c
from schemas.io import read_table
from tests import photo_files as pf

FOLDERS = [pf.BUNDLED_PHOTOS] + ([pf.SHARED_PHOTOS] if pf.SHARED_PHOTOS.is_dir() else [])
HEIF_SUFFIXES = (".heic", ".heif")


def _outputs(out):
    manifest = read_table(str(out / "manifest")).to_pandas()
    dead = read_table(str(out / "dead_letters")).to_pandas()
    return manifest, dead


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.parent.parent.name + "/photos")
def test_every_real_photo_is_a_row_or_a_dead_letter(tmp_path, folder):
    table = pf.photo_table(folder)
    out = tmp_path / "out"
    summary = ip.run([f"--photos={folder}", f"--output={out}"])
    manifest, dead = _outputs(out)
    check_columns("photos", read_table(str(out / "manifest")).schema, PHOTOS)
    # photos_gps.csv is not named as an image: not ingested. Every other file is a row or a dead letter.
    assert summary.rows_in == len(table) == len(manifest) + len(dead)
    assert summary.balanced and summary.rows_out == len(manifest)
    names = [os.path.basename(u) for u in manifest[c.IMAGE_URI]] + [
        os.path.basename(_record(r)[c.IMAGE_URI]) for r in dead[c.RECORD]
    ]
    assert sorted(names) == sorted(table)
    # The files Pillow cannot decode are the dead letters, and only they.
    failing = {name for name, row in table.items() if row["decodes"] != "ok"}
    assert {os.path.basename(_record(r)[c.IMAGE_URI]) for r in dead[c.RECORD]} == failing
    assert set(dead[c.REASON]) <= {Reason.UNREADABLE_IMAGE}
    for row in manifest.itertuples():
        name = os.path.basename(row.image_uri)
        want = table[name]
        assert abs(row.lat - float(want["lat"])) < 1e-7 and abs(row.lng - float(want["lng"])) < 1e-7, name
        assert row.photo_id == hashlib.sha256((folder / name).read_bytes()).hexdigest()[:20]
    heif = [n for n in table if n.lower().endswith(HEIF_SUFFIXES)]
    assert heif and set(heif) <= {os.path.basename(u) for u in manifest[c.IMAGE_URI]}
    assert manifest[c.PHOTO_ID].is_unique
    nikon = manifest[manifest[c.IMAGE_URI].str.endswith("DSCN0010.jpg")].iloc[0]
    assert (nikon[c.TAKEN_AT], nikon[c.CAMERA]) == ("2008-10-22T16:28:39", "NIKON COOLPIX P6000")


def _record(text: str) -> dict:
    """The original row of a dead letter (stored as JSON)."""
    return json.loads(text)


def _generated_folder(folder):
    """One file per case the real folder lacks; returns {file name: expected reason or None for a row}."""
    ok = pf.jpeg(exif=pf.exif_bytes(lat=33.8675, lng=70.5, lat_ref="S", lng_ref="W", make="Canon", model="EOS"))
    copy = pf.jpeg(seed=7, exif=pf.exif_bytes(lat=45.0, lng=7.0))
    r = pf.IFDRational
    cases = {
        "ok_south_west.jpg": (ok, None),
        "b_copy.jpg": (copy, Reason.DUPLICATE_CONTENT),  # same bytes as a_copy.jpg, which sorts first
        "a_copy.jpg": (copy, None),
        "no_exif.jpg": (pf.jpeg(seed=1), Reason.NO_EXIF),
        "no_gps.jpg": (pf.jpeg(seed=2, exif=pf.exif_bytes(make="Canon")), Reason.NO_GPS),
        "null_island.jpg": (
            pf.jpeg(seed=3, exif=pf.exif_bytes(lat=(r(0, 1),), lng=(r(0, 1),))),
            Reason.GPS_OUT_OF_RANGE,
        ),
        "zero_denominator.jpg": (
            pf.jpeg(seed=4, exif=pf.exif_bytes(lat=(r(48, 1), r(30, 0), r(0, 1)), lng=2.0)),
            Reason.MALFORMED_GPS,
        ),
        "truncated.jpg": (pf.jpeg(seed=5, exif=pf.exif_bytes(lat=1.0, lng=2.0))[:400], Reason.UNREADABLE_IMAGE),
        "text.jpg": (b"this is a text file named .jpg\n", Reason.NOT_AN_IMAGE),
        "bomb.png": (pf.bomb_png(), Reason.TOO_MANY_PIXELS),
    }
    for name, (data, _) in cases.items():
        pf.write(folder, name, data)
    pf.write(folder, "README.txt", b"not an image by its name: not ingested")
    return {name: reason for name, (_, reason) in cases.items()}


def test_generated_cases_get_their_reasons_and_ids_are_stable(tmp_path):
    folder = tmp_path / "photos"
    expected = _generated_folder(folder)
    out = tmp_path / "out"
    summary = ip.run([f"--photos={folder}", f"--output={out}"])
    manifest, dead = _outputs(out)
    assert summary.balanced and summary.rows_in == len(expected) == len(manifest) + len(dead)
    got = {os.path.basename(u): None for u in manifest[c.IMAGE_URI]}
    for record, reason in zip(dead[c.RECORD], dead[c.REASON]):
        got[os.path.basename(_record(record)[c.IMAGE_URI])] = reason
    assert got == expected
    row = manifest.set_index(manifest[c.IMAGE_URI].map(os.path.basename)).loc["ok_south_west.jpg"]
    assert row[c.LAT] == pytest.approx(-33.8675, abs=1e-6) and row[c.LNG] == pytest.approx(-70.5, abs=1e-6)
    assert row[c.CAMERA] == "Canon EOS"
    duplicate = dead[dead[c.REASON] == Reason.DUPLICATE_CONTENT].iloc[0]
    assert duplicate[c.DETAIL].startswith(f"same bytes as {folder / 'a_copy.jpg'}")
    assert summary.dead_letters[Reason.TOO_MANY_PIXELS] == 1

    # A rerun on a moved copy of the folder gives the same ids to the same bytes.
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    ip.run([f"--photos={moved}/*.jpg", f"--output={tmp_path / 'again'}"])
    again, _ = _outputs(tmp_path / "again")
    by_name = lambda t: dict(zip(t[c.IMAGE_URI].map(os.path.basename), t[c.PHOTO_ID]))  # noqa: E731
    assert by_name(again) == by_name(manifest)


def test_photos_to_geolocate_keep_rows_without_gps(tmp_path):
    folder = tmp_path / "photos"
    expected = _generated_folder(folder)
    out = tmp_path / "out"
    summary = ip.run([f"--photos={folder}", f"--output={out}", "--no_require_gps"])
    manifest, dead = _outputs(out)
    gps_reasons = {Reason.NO_EXIF, Reason.NO_GPS, Reason.GPS_OUT_OF_RANGE, Reason.MALFORMED_GPS}
    assert summary.balanced
    assert len(manifest) == sum(1 for r in expected.values() if r is None or r in gps_reasons)
    located = manifest.set_index(manifest[c.IMAGE_URI].map(os.path.basename))
    assert np.isnan(located.loc["no_exif.jpg", c.LAT]) and np.isnan(located.loc["zero_denominator.jpg", c.LNG])
    assert set(dead[c.REASON]) == {r for r in expected.values() if r is not None and r not in gps_reasons}


def test_ingest_transform_on_created_uris(tmp_path):
    folder = tmp_path / "photos"
    expected = _generated_folder(folder)
    uris = sorted(str(folder / name) for name in expected)
    with test_pipeline.TestPipeline(options=common.pipeline_options()) as pipeline:
        result = pipeline | beam.Create(uris) | ip.IngestPhotos()
        rows = result["photos"] | beam.FlatMap(lambda batch: [os.path.basename(u) for u in batch.column(c.IMAGE_URI).to_pylist()])
        reasons = result[common.DEAD] | beam.Map(lambda d: d[c.REASON])
        assert_that(rows, equal_to([n for n, r in expected.items() if r is None]), label="rows")
        assert_that(reasons, equal_to([r for r in expected.values() if r is not None]), label="dead letters")


def _env():
    return dict(os.environ, PYTHONPATH=str(pf.REPO))


def test_command_line_from_another_directory_with_a_bomb_under_1_gb(tmp_path):
    folder = tmp_path / "photos"
    pf.write(folder, "bomb.png", pf.bomb_png())
    pf.write(folder, "ok.jpg", pf.jpeg(exif=pf.exif_bytes(lat=10.0, lng=20.0)))
    code = (
        "import sys\n"
        "from pipelines import ingest_photos\n"
        "ingest_photos.run(sys.argv[1:])\n"
    ) + pf.PRINT_PEAK_RSS
    run = subprocess.run(
        [sys.executable, "-c", code, "--photos", "photos", "--output", "out"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rows in 2, rows out 1, dead letters 1 (too_many_pixels 1); balanced" in run.stdout
    max_rss_kb = pf.peak_rss_kb(run.stdout)
    assert max_rss_kb < 1024 * 1024, f"peak RSS {max_rss_kb / 1024:.0f} MB"


def test_nothing_to_ingest_is_one_line_and_a_failure(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("no photos here")
    for spec, says in [
        ("docs", "matches 1 files, none named as an image"),
        (str(tmp_path / "nope" / "*.jpg"), "matches nothing"),
        (str(tmp_path / "missing_dir"), "no such file or directory"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            ip.run([f"--photos={tmp_path / spec}", f"--output={tmp_path / 'out'}"])
        assert str(exit_.value).startswith("--photos ") and says in str(exit_.value)
    # As a scheduler sees it: a non-zero exit status and one line, no traceback.
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.ingest_photos", "--photos", "empty", "--output", "out"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1] == "ingest_photos: --photos empty: matches nothing"
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_remote_folders_and_globs_are_listed_through_filesystems(monkeypatch):
    """gs:// inputs: a folder is searched recursively, a glob is used as given, one object is itself
    (Beam's FileSystems stands in for GCS here; no network)."""
    from types import SimpleNamespace

    objects = ["gs://b/photos/a.jpg", "gs://b/photos/sub/b.HEIC", "gs://b/photos/notes.txt"]
    patterns = []

    def match(specs):
        patterns.extend(specs)
        pattern = specs[0]
        hits = objects if pattern.endswith("/**") else [o for o in objects if o == pattern]
        return [SimpleNamespace(metadata_list=[SimpleNamespace(path=p) for p in hits])]

    monkeypatch.setattr(ip.FileSystems, "match", staticmethod(match))
    monkeypatch.setattr(ip.FileSystems, "exists", staticmethod(lambda path: path in objects))
    assert ip.list_photos("gs://b/photos") == (objects[:2], objects[2:])
    assert ip.list_photos("gs://b/photos/") == (objects[:2], objects[2:])
    assert ip.list_photos("gs://b/photos/a.jpg") == (objects[:1], [])
    assert patterns == ["gs://b/photos/**", "gs://b/photos/**", "gs://b/photos/a.jpg"]
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        ip.list_photos("gs://b/other/*.jpg")
