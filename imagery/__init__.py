"""Photographs in: decode any image file to the backbone's input, and read its EXIF location.

Pillow + NumPy only (no Beam, no TensorFlow), so every path that turns a photo into pixels -- the feature
extraction job, the exported geolocator's callers (``batch_predict``), ``locate`` -- shares this one
preprocessing and gives the same features for the same file.

- ``load_image(data, size=299)`` -> float32 ``[size, size, 3]`` in 0..255: pixel count checked before decoding
  (decompression bombs), a big JPEG decoded at a reduced DCT scale (draft), EXIF orientation applied, any
  mode to RGB, one Pillow resize (see ``imagery.decode``).
- ``read_metadata(data)`` / ``read_gps(data)``: EXIF GPS position, ``taken_at`` and ``camera`` via exifread
  (see ``imagery.exif``).
- ``ImageError(reason, detail)``: ``reason`` is a ``schemas.Reason``, so callers turn it into a dead letter.

    >>> from imagery import load_image, read_gps
    >>> pixels = load_image(open("photo.jpg", "rb").read())   # doctest: +SKIP
"""

from imagery.decode import MAX_PIXELS, RESAMPLE, ImageError, decode_rgb, image_size, load_image, to_rgb
from imagery.exif import PhotoMetadata, read_gps, read_metadata

__all__ = [
    "MAX_PIXELS",
    "RESAMPLE",
    "ImageError",
    "PhotoMetadata",
    "decode_rgb",
    "image_size",
    "load_image",
    "read_gps",
    "read_metadata",
    "to_rgb",
]
