"""Photo files for the image-path tests: the bundled real photos, the shared folder, and generated cases.

Generated EXIF is written with Pillow's own ``Image.Exif`` (GPS IFD 0x8825, EXIF IFD 0x8769), so no EXIF writer
library is needed and the reader under test (exifread) is not the writer.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

REPO = Path(__file__).resolve().parents[1]
BUNDLED_PHOTOS = REPO / "data" / "photos"
# In CI a copy of shared/ sits beside the repository (``../shared``); developers' worktrees find it through
# $CPLANET_SHARED (e.g. /work/shared); on a user's machine it may not exist and its tests are skipped.
SHARED_PHOTOS = Path(os.environ.get("CPLANET_SHARED") or REPO.parent / "shared") / "data" / "photos"
GPS_CSV = "photos_gps.csv"

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011


def photo_table(folder: Path) -> dict[str, dict]:
    """``photos_gps.csv`` of a photo folder, by file name."""
    with open(folder / GPS_CSV, newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name != GPS_CSV)


def _rationals(value: float | tuple) -> tuple:
    if isinstance(value, tuple):
        return tuple(v if isinstance(v, IFDRational) else IFDRational(v) for v in value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60 * 10000)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds, 10000)


def exif_bytes(
    lat: float | tuple | None = None,
    lng: float | tuple | None = None,
    lat_ref: str | None = "N",
    lng_ref: str | None = "E",
    make: str | None = None,
    model: str | None = None,
    taken: str | None = None,
    offset: str | None = None,
    orientation: int | None = None,
) -> Image.Exif:
    """An ``Image.Exif`` with the given tags (GPS only when lat/lng are given; refs ``None`` are left out)."""
    exif = Image.Exif()
    if make:
        exif[MAKE] = make
    if model:
        exif[MODEL] = model
    if orientation:
        exif[ORIENTATION] = orientation
    if taken or offset:
        sub = exif.get_ifd(EXIF_IFD)
        if taken:
            sub[DATETIME_ORIGINAL] = taken
        if offset:
            sub[OFFSET_TIME_ORIGINAL] = offset
    if lat is not None or lng is not None:
        gps = exif.get_ifd(GPS_IFD)
        if lat_ref is not None:
            gps[1] = lat_ref
        if lat is not None:
            gps[2] = _rationals(lat)
        if lng_ref is not None:
            gps[3] = lng_ref
        if lng is not None:
            gps[4] = _rationals(lng)
    return exif


def jpeg(pixels: np.ndarray | None = None, exif: Image.Exif | None = None, seed: int = 0, quality: int = 90) -> bytes:
    """JPEG bytes of ``pixels`` (default: 48x64 noise) with ``exif`` (none if ``None``)."""
    if pixels is None:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def png(image: Image.Image, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A ~1 kB PNG whose header declares ``width x height`` RGB pixels (10.8 GB decoded at the default size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 2, 9)  # two rows of data; the rest is only declared
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def pillow_gps(data: bytes) -> tuple[float, float] | None:
    """(lat, lng) as Pillow reads the GPS IFD: an EXIF reader independent of exifread."""
    gps = Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)
    if 2 not in gps or 4 not in gps:
        return None

    def degrees(values, ref, negative):
        value = sum(float(v) / 60**i for i, v in enumerate(values))
        return -value if ref.strip("\x00").upper() == negative else value

    return degrees(gps[2], gps.get(1, "N"), "S"), degrees(gps[4], gps.get(3, "E"), "W")


def write(folder: Path, name: str, data: bytes) -> Path:
    os.makedirs(folder, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path
