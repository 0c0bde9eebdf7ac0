"""Ingest photographs: a folder (or glob) of image files -> the photos manifest, one row per usable photo.

Every image file matched (names ending in an image extension, ``IMAGE_EXTENSIONS``; other files, e.g. a
README, are listed in the log as skipped) becomes exactly one of:

- a row of ``OUT/manifest/`` (``schemas.PHOTOS``: ``photo_id, lat, lng, image_uri, taken_at, camera``), the
  training manifest that ``extract_features`` / ``run_all`` read;
- a dead letter in ``OUT/dead_letters/`` (``schemas.DEAD_LETTERS``) whose reason says why: ``not_an_image``
  (e.g. a text file named ``.jpg``), ``unreadable_image`` (truncated or corrupt), ``too_many_pixels`` (a
  decompression bomb: refused from its header, nothing decoded), ``no_exif``, ``no_gps``, ``malformed_gps``
  (zero denominators, missing N/S/E/W), ``gps_out_of_range`` (incl. 0/0), ``duplicate_content`` (the same bytes
  under another name: the lexicographically smallest ``image_uri`` is kept, the others are dead letters naming it)
  or ``missing_file`` (gone between listing and reading).

Files matched = rows + dead letters, checked before anything is committed (each output gets ``_SUCCESS``).

``photo_id`` is the first 20 hex digits (80 bits) of the SHA-256 of the file's bytes: the same on every rerun,
after a rename or a move to ``gs://``, and the reason identical copies are caught as duplicates.

Decoding (``imagery.load_image``: header pixel check, EXIF orientation, mode to RGB) is the same code
``extract_features`` runs, so a photo in the manifest is a photo that will decode there; EXIF is read with
exifread (``imagery.exif``). JPEG, PNG, TIFF, WebP, GIF, BMP and HEIC/HEIF (pillow-heif) are read.

Run locally (offline):

    python -m pipelines.ingest_photos --photos ~/Pictures/trip --output out/photos
    python -m pipelines.ingest_photos --photos 'photos/**/*.jpg' --output out/photos

On Dataflow (files and outputs on gs://; see docs/RUNNERS.md):

    python -m pipelines.ingest_photos --photos 'gs://B/photos/**' --output gs://B/photos_manifest \\
        --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py

``--no_require_gps`` keeps photos without a usable position as rows with empty ``lat``/``lng`` (photos to
geolocate with ``batch_predict``/``locate``) instead of dead letters.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

import imagery
from pipelines import common
from schemas import PHOTOS, Reason
from schemas import columns as c
from schemas.io import is_remote

LOG = logging.getLogger(__name__)

JOB = "ingest_photos"
PHOTO_ID_HEX = 20
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".heic", ".heif", ".hif", ".webp", ".gif", ".bmp", ".avif",
)  # fmt: skip
_PHOTOS = "photos"
_ROWS_PER_BATCH = 4096
_PROGRESS_EVERY = 100


# ----------------------------------------------------------------------------------------------- listing


def is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_photos(spec: str) -> tuple[list[str], list[str]]:
    """(image files, other files) of a file, a directory (recursively) or a glob; local or ``gs://``, sorted.

    Raises ``FileNotFoundError`` with one line when nothing matches.
    """
    if any(ch in spec for ch in "*?["):
        pattern = spec
    elif not is_remote(spec) and os.path.isdir(spec):
        pattern = os.path.join(os.path.abspath(spec), "**")
    elif not is_remote(spec) and os.path.isfile(spec):
        pattern = os.path.abspath(spec)
    elif is_remote(spec) and not spec.endswith("/") and FileSystems.exists(spec):
        pattern = spec
    elif is_remote(spec):
        pattern = spec.rstrip("/") + "/**"
    else:
        raise FileNotFoundError(f"--photos {spec}: no such file or directory")
    if not is_remote(pattern) and not os.path.isabs(pattern):
        pattern = os.path.abspath(pattern)
    matched = sorted({m.path for result in FileSystems.match([pattern]) for m in result.metadata_list})
    images = [p for p in matched if is_image_name(p)]
    others = [p for p in matched if not is_image_name(p)]
    if not images:
        what = f"{len(others)} files, none named as an image ({', '.join(IMAGE_EXTENSIONS)})" if others else "nothing"
        raise FileNotFoundError(f"--photos {spec}: matches {what}")
    return images, others


def photo_id_of(data: bytes) -> str:
    """The content id: first ``PHOTO_ID_HEX`` hex digits of the bytes' SHA-256."""
    return hashlib.sha256(data).hexdigest()[:PHOTO_ID_HEX]


# ----------------------------------------------------------------------------------------------- transforms


class _ReadPhotoFn(beam.DoFn):
    """uri -> (photo_id, photo dict with the decode/EXIF outcome), or a dead letter if the file cannot be read."""

    def __init__(self, max_pixels: int):
        self._max_pixels = max_pixels
        self._rows_in = Metrics.counter(JOB, common.ROWS_IN)
        self._seen = 0

    def process(self, uri: str):
        self._rows_in.inc()
        self._seen += 1
        if self._seen % _PROGRESS_EVERY == 0:  # decoding large photos is slow: show that work goes on
            LOG.info("read %d photos in this worker (last: %s)", self._seen, uri)
        record = {c.IMAGE_URI: uri}
        try:
            with FileSystems.open(uri, compression_type="uncompressed") as handle:
                data = handle.read()
        except Exception as error:  # FileSystems raises IOError/BeamIOError/FileNotFoundError by scheme
            reason = Reason.UNREADABLE_IMAGE if FileSystems.exists(uri) else Reason.MISSING_FILE
            yield beam.pvalue.TaggedOutput(common.DEAD, common.dead_letter(JOB, reason, f"{uri}: {error}", record))
            return
        photo_id = photo_id_of(data)
        photo = {c.PHOTO_ID: photo_id, c.IMAGE_URI: uri, "problem": None}
        try:
            imagery.load_image(data, max_pixels=self._max_pixels)
        except imagery.ImageError as error:
            photo["problem"] = (error.reason, error.detail)
            yield photo_id, photo
            return
        meta = imagery.read_metadata(data)
        photo.update({c.LAT: meta.lat, c.LNG: meta.lng, c.TAKEN_AT: meta.taken_at, c.CAMERA: meta.camera})
        photo["gps_problem"] = meta.gps_problem
        yield photo_id, photo


def _keep_one_per_content(keyed) -> Iterator:
    """All files with the same bytes: the smallest uri goes on, the others are ``duplicate_content``."""
    _, photos = keyed
    photos = sorted(photos, key=lambda p: p[c.IMAGE_URI])
    kept = photos[0]
    yield kept
    for other in photos[1:]:
        record = {c.PHOTO_ID: other[c.PHOTO_ID], c.IMAGE_URI: other[c.IMAGE_URI]}
        detail = f"same bytes as {kept[c.IMAGE_URI]} (kept)"
        yield beam.pvalue.TaggedOutput(
            common.DEAD, common.dead_letter(JOB, Reason.DUPLICATE_CONTENT, detail, record)
        )


class _ToRowFn(beam.DoFn):
    """Photo dict -> a manifest row, or a dead letter with its image or GPS problem."""

    def __init__(self, require_gps: bool):
        self._require_gps = require_gps

    def process(self, photo: dict):
        record = {c.PHOTO_ID: photo[c.PHOTO_ID], c.IMAGE_URI: photo[c.IMAGE_URI]}
        problem = photo["problem"] or (photo.get("gps_problem") if self._require_gps else None)
        if problem is not None:
            reason, detail = problem
            yield beam.pvalue.TaggedOutput(common.DEAD, common.dead_letter(JOB, reason, detail, record))
            return
        yield {name: photo.get(name) for name in PHOTOS.names}


def rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=PHOTOS)


class IngestPhotos(beam.PTransform):
    """Image uris -> outputs ``photos`` (Arrow batches of ``schemas.PHOTOS``) and ``dead_letters``."""

    def __init__(self, require_gps: bool = True, max_pixels: int = imagery.MAX_PIXELS):
        super().__init__()
        self._require_gps, self._max_pixels = require_gps, max_pixels

    def expand(self, uris):
        read = (
            uris
            # Decoding is the slow step: let the runner spread files over workers.
            | "Spread files over workers" >> beam.Reshuffle()
            | "Read, decode and parse EXIF" >> beam.ParDo(_ReadPhotoFn(self._max_pixels)).with_outputs(common.DEAD, main=_PHOTOS)
        )
        unique = (
            read[_PHOTOS]
            | "Gather files by content" >> beam.GroupByKey()
            | "Keep one file per content" >> beam.FlatMap(_keep_one_per_content).with_outputs(common.DEAD, main=_PHOTOS)
        )
        checked = unique[_PHOTOS] | "Make manifest rows" >> beam.ParDo(_ToRowFn(self._require_gps)).with_outputs(
            common.DEAD, main=_PHOTOS
        )
        photos = (
            checked[_PHOTOS]
            | "Group rows into batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=_ROWS_PER_BATCH)
            | "Make Arrow batches" >> beam.Map(rows_to_batch)
        )
        dead = (read[common.DEAD], unique[common.DEAD], checked[common.DEAD]) | "Gather dead letters" >> beam.Flatten()
        return {_PHOTOS: photos, common.DEAD: dead}


def build_pipeline(
    pipeline: beam.Pipeline,
    uris: Sequence[str],
    manifest_dir: str,
    dead_letters_dir: str,
    require_gps: bool = True,
    max_pixels: int = imagery.MAX_PIXELS,
) -> None:
    listed = pipeline | "List the photos" >> beam.Create(list(uris))
    # The commit step's count of rows in: every listed file must end as a manifest row or a dead letter.
    common.ledger(pipeline, JOB).tally(common.ROWS_IN, listed, "Count the photos in")
    ingested = listed | "Ingest photos" >> IngestPhotos(require_gps=require_gps, max_pixels=max_pixels)
    _ = (
        ingested[_PHOTOS]
        | common.CountRowsOut(JOB)
        | "Write the manifest" >> common.WriteBatchesToParquet(manifest_dir, PHOTOS)
    )
    _ = ingested[common.DEAD] | "Write dead letters" >> common.WriteDeadLetters(dead_letters_dir, JOB)


def run(argv: Sequence[str] | None = None) -> common.JobSummary:
    from schemas.cli import Parser

    parser = Parser(prog="pipelines.ingest_photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, help="a directory (searched recursively), a file or a glob")
    parser.add_argument("--output", required=True, type=common.path_flag,
                        help="writes OUTPUT/manifest and OUTPUT/dead_letters")
    parser.add_argument(
        "--no_require_gps",
        action="store_true",
        help="photos without a usable GPS position become rows with empty lat/lng (photos to geolocate)",
    )
    parser.add_argument(
        "--max_pixels", type=int, default=imagery.MAX_PIXELS, help="larger images are too_many_pixels dead letters"
    )
    common.add_job_flags(parser)
    # Sorting out photos without a usable GPS position is this job's purpose, not a sign of broken input:
    # by default it never fails on its share of dead letters (set --max_dead_letter_fraction to make it).
    parser.set_defaults(max_dead_letter_fraction=1.0)
    args, options = common.parse_job_args(parser, argv)
    try:
        images, others = list_photos(args.photos)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if others:
        shown = ", ".join(os.path.basename(p) for p in others[:5]) + (" ..." if len(others) > 5 else "")
        LOG.info("%d files not named as images are not ingested: %s", len(others), shown)
    LOG.info("ingesting %d image files from %s", len(images), args.photos)
    join = FileSystems.join
    manifest = common.StagedOutput(join(args.output, "manifest"))
    dead_letters = common.StagedOutput(join(args.output, "dead_letters"))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline, images, manifest.path, dead_letters.path, require_gps=not args.no_require_gps, max_pixels=args.max_pixels
    )
    summary = common.run_job(pipeline, JOB, [manifest, dead_letters], args=args)
    print(f"{JOB}: manifest {manifest.final}, dead letters {dead_letters.final}", flush=True)
    return summary


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.ingest_photos")
