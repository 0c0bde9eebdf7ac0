"""EXIF of a photo: its GPS position, when it was taken and with which camera, read with exifread.

exifread (a maintained EXIF reader for JPEG, TIFF, HEIC/HEIF, PNG and WebP) walks the tags; this module only
turns its values into numbers and decides what is usable:

- **Position**: ``GPSLatitude``/``GPSLongitude`` (1 to 3 rationals: degrees, minutes, seconds, summed exactly
  as fractions) signed by ``GPSLatitudeRef`` ``N``/``S`` and ``GPSLongitudeRef`` ``E``/``W``.
  Problems, as ``schemas.Reason``:
    * ``no_exif``: no EXIF at all (or none exifread can read);
    * ``no_gps``: EXIF without a latitude or longitude;
    * ``malformed_gps``: a zero denominator, a negative or non-numeric component, minutes or seconds >= 60, a
      missing or unknown reference (without N/S or E/W the hemisphere is a guess, and a wrong guess puts the
      photo on another continent without anybody noticing);
    * ``gps_out_of_range``: |lat| > 90, |lng| > 180, or exactly 0/0 (what receivers without a fix write).
- ``taken_at``: ``DateTimeOriginal`` as ISO 8601 (``2008-10-22T16:28:39``, with ``OffsetTimeOriginal``
  appended when present), or ``None`` when missing or not a date (e.g. ``0000:00:00 00:00:00``).
- ``camera``: ``Make`` and ``Model`` joined (``"NIKON CORPORATION NIKON D3100"``; a model that already starts
  with the make is not repeated: ``"Canon EOS 5D"``), or ``None``.
"""

from __future__ import annotations

import datetime
import io
import logging
import re
from dataclasses import dataclass
from fractions import Fraction

from imagery.errors import ImageError
from schemas.tables import Reason

# exifread logs every oddity of a test file at WARNING; the reasons we return say what matters.
logging.getLogger("exifread").setLevel(logging.ERROR)

_LAT, _LAT_REF = "GPS GPSLatitude", "GPS GPSLatitudeRef"
_LNG, _LNG_REF = "GPS GPSLongitude", "GPS GPSLongitudeRef"
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class PhotoMetadata:
    """What the EXIF says; ``lat``/``lng`` are ``None`` when ``gps_problem`` (reason, detail) says why."""

    lat: float | None
    lng: float | None
    taken_at: str | None
    camera: str | None
    gps_problem: tuple[str, str] | None = None


def read_tags(data: bytes) -> dict:
    """exifread's tags of an image file (no thumbnail, no maker notes); ``ImageError(no_exif)`` if unreadable."""
    import exifread

    try:
        tags = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=False)
    except Exception as error:  # exifread raises assorted errors on broken IFDs
        raise ImageError(Reason.NO_EXIF, f"EXIF cannot be read: {type(error).__name__}: {error}") from error
    return {k: v for k, v in tags.items() if not k.startswith(("JPEGThumbnail", "TIFFThumbnail", "Thumbnail"))}


def _text(tags: dict, key: str) -> str | None:
    tag = tags.get(key)
    if tag is None:
        return None
    values = tag.values
    if isinstance(values, bytes):
        values = values.decode("utf-8", errors="replace")
    if isinstance(values, list):
        values = "".join(str(v) for v in values) if values and isinstance(values[0], str) else str(values)
    text = str(values).replace("\x00", " ").strip()
    return " ".join(text.split()) or None


def _fraction(value) -> Fraction:
    """One GPS component as an exact fraction; ``ValueError`` for a zero denominator or a non-number."""
    num, den = getattr(value, "num", None), getattr(value, "den", None)
    if num is None:  # an integer-typed tag
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a number")
        return Fraction(value)
    if den == 0:
        raise ValueError(f"zero denominator ({num}/{den})")
    return Fraction(int(num), int(den))


def _coordinate(tags: dict, key: str, ref_key: str, refs: tuple[str, str]) -> float:
    tag = tags[key]
    values = tag.values if isinstance(tag.values, list) else [tag.values]
    name = key.split()[-1]
    if not 1 <= len(values) <= 3:
        raise ImageError(Reason.MALFORMED_GPS, f"{name} has {len(values)} values, not degrees[, minutes[, seconds]]")
    try:
        parts = [_fraction(v) for v in values]
    except ValueError as error:
        raise ImageError(Reason.MALFORMED_GPS, f"{name} = {tag}: {error}") from error
    if any(p < 0 for p in parts):
        raise ImageError(Reason.MALFORMED_GPS, f"{name} = {tag}: negative component (the sign belongs in the ref)")
    if any(p >= 60 for p in parts[1:]):
        raise ImageError(Reason.MALFORMED_GPS, f"{name} = {tag}: minutes or seconds >= 60")
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    ref = (_text(tags, ref_key) or "").upper()
    if ref not in refs:
        shown = "missing" if not ref else repr(ref)
        raise ImageError(Reason.MALFORMED_GPS, f"{ref_key.split()[-1]} is {shown}, not {' or '.join(refs)}")
    return float(-degrees if ref == refs[1] else degrees)


def gps_from_tags(tags: dict) -> tuple[float, float]:
    """(lat, lng) in signed decimal degrees from exifread tags, or ``ImageError`` naming the problem."""
    if not tags:
        raise ImageError(Reason.NO_EXIF, "the file has no EXIF")
    missing = [k.split()[-1] for k in (_LAT, _LNG) if k not in tags]
    if missing:
        raise ImageError(Reason.NO_GPS, f"EXIF without {' and '.join(missing)}")
    lat = _coordinate(tags, _LAT, _LAT_REF, ("N", "S"))
    lng = _coordinate(tags, _LNG, _LNG_REF, ("E", "W"))
    if lat == 0.0 and lng == 0.0:
        raise ImageError(Reason.GPS_OUT_OF_RANGE, "0/0: a GPS without a fix, not a place")
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lng <= 180.0:
        raise ImageError(Reason.GPS_OUT_OF_RANGE, f"lat={lat} lng={lng} outside [-90, 90] x [-180, 180]")
    return lat, lng


def taken_at_from_tags(tags: dict) -> str | None:
    text = _text(tags, "EXIF DateTimeOriginal")
    if not text:
        return None
    for layout in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            when = datetime.datetime.strptime(text[:19], layout)
            break
        except ValueError:
            continue
    else:
        return None
    iso = when.isoformat()
    offset = _text(tags, "EXIF OffsetTimeOriginal")
    return iso + offset if offset and _OFFSET.match(offset) else iso


def camera_from_tags(tags: dict) -> str | None:
    make, model = _text(tags, "Image Make"), _text(tags, "Image Model")
    if make and model and model.lower().startswith(make.lower()):
        return model
    return " ".join(p for p in (make, model) if p) or None


def read_metadata(data: bytes) -> PhotoMetadata:
    """Position (or the reason there is none), ``taken_at`` and ``camera`` of an image file's EXIF."""
    try:
        tags = read_tags(data)
    except ImageError as error:
        return PhotoMetadata(None, None, None, None, (error.reason, error.detail))
    taken_at, camera = taken_at_from_tags(tags), camera_from_tags(tags)
    try:
        lat, lng = gps_from_tags(tags)
    except ImageError as error:
        return PhotoMetadata(None, None, taken_at, camera, (error.reason, error.detail))
    return PhotoMetadata(lat, lng, taken_at, camera)


def read_gps(data: bytes) -> tuple[float, float]:
    """(lat, lng) of an image file's EXIF GPS; ``ImageError`` (no_exif, no_gps, malformed_gps, gps_out_of_range)."""
    return gps_from_tags(read_tags(data))
