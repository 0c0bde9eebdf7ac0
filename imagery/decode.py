"""Image bytes -> the backbone's input: float32 ``[size, size, 3]``, RGB, 0..255, upright.

Steps, each a documented choice so the three image paths (``extract_features``, ``batch_predict``, ``locate``)
give the same pixels:

1. **Pixel count before decoding.** ``Image.open`` only reads the header; a declared size above ``MAX_PIXELS``
   (Pillow's own decompression-bomb threshold, 89,478,485 pixels: ~268 MB as RGB) is refused as
   ``too_many_pixels`` before any pixel buffer exists, so a 2 kB PNG declaring 60,000 x 60,000 pixels costs
   nothing. Pillow's ``DecompressionBombError`` (raised by ``open`` above twice that) means the same.
2. **Decode** (``load``), for ``load_image`` at a reduced JPEG scale (``DRAFT_FACTOR``, below): a truncated or corrupt file fails here (``unreadable_image``); bytes no format
   recognises are ``not_an_image``. JPEG, PNG, TIFF, GIF, WebP, BMP... through Pillow, HEIC/HEIF through
   pillow-heif (registered once, on import). Multi-frame files give their first frame.
3. **EXIF orientation** (``ImageOps.exif_transpose``): the pixels of the upright photo. (pillow-heif already
   applies HEIF's own rotation and clears the tag, so nothing turns twice.)
4. **Mode to RGB** (``to_rgb``): grey, palette, CMYK, YCbCr, LAB, 1-bit through Pillow's ``convert``; 16-bit and
   32-bit integer grey (``I;16*``, ``I``) scaled 0..65535 -> 0..255; float grey (``F``) clipped to 0..255
   (0..1 data scaled first); any alpha (``RGBA``, ``LA``, ``PA``, palette transparency) **composited on white**,
   as a viewer shows a transparent logo or screenshot, instead of the arbitrary colours under alpha=0.
   ICC profiles are not applied (as in TensorFlow's decoders): Display-P3 photos are read as sRGB.
   **JPEG draft.** libjpeg can decode straight to 1/2, 1/4 or 1/8 of the stored size (it scales in the DCT, an
   area-averaging downscale). ``load_image`` asks Pillow (``Image.draft``) for the smallest such scale that still
   leaves both sides >= ``DRAFT_FACTOR`` x ``size`` (598 pixels for 299), so a 12-megapixel photo is decoded at
   1008 x 756 instead of 4032 x 3024: 2.3x less decode CPU on the benchmark's mixed photos. The one resize below
   then still shrinks by >= 2x with its antialiased filter; against a full decode the pixels differ by 0.09
   levels on average and at most 6 of 255 (bundled and shared real photos, benchmark photos; asserted by
   ``tests/test_imagery.py``). A scale down to just ``size`` (factor 1) would save a little more but differs by
   up to 30 levels. Every path calls ``load_image``, so all of them see the same pixels.
5. **One resize** to ``size x size`` with ``RESAMPLE`` = Pillow's BILINEAR: the whole photo squashed to a
   square (no crop), as the geolocator was trained. Pillow widens the filter by the scale factor when shrinking,
   so this is an antialiased (area-aware) bilinear, close to ``tf.image.resize(..., antialias=True)``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imagery.errors import ImageError
from schemas.tables import Reason

MAX_PIXELS = 89_478_485  # = Image.MAX_IMAGE_PIXELS's default (2**30 // 4 // 3); a constant so no global state matters
RESAMPLE = Image.Resampling.BILINEAR
DEFAULT_SIZE = 299
# JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) keeping both sides >= DRAFT_FACTOR * size.
DRAFT_FACTOR = 2

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:  # HEIC/HEIF files then come out as not_an_image
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_SUPPORTED = _register_heif()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and check the declared pixel count before anything is decoded."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        # A limit raised by the caller must not be undercut by Pillow's own (which refuses at 2x it).
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Our own check below decides; Pillow's warning between 1x and 2x its limit would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageError(Reason.TOO_MANY_PIXELS, str(error)) from error
    except UnidentifiedImageError as error:
        raise ImageError(Reason.NOT_AN_IMAGE, f"no image format recognises these {len(data)} bytes") from error
    except Exception as error:  # a plugin failing on a broken header: OSError, SyntaxError, struct.error, ...
        raise ImageError(Reason.UNREADABLE_IMAGE, f"cannot read the header: {type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(
            Reason.TOO_MANY_PIXELS, f"{width} x {height} = {width * height:,} pixels > limit {max_pixels:,}"
        )
    if width <= 0 or height <= 0:
        image.close()
        raise ImageError(Reason.UNREADABLE_IMAGE, f"declared size {width} x {height}")
    return image


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as stored (before EXIF orientation), from the header only; ``ImageError`` as ``load_image``."""
    with _open(data, max_pixels) as image:
        return image.size


def _grey_to_uint8(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        scaled = np.clip(values.astype(np.float64), 0, 65535) / 257.0
    else:  # "F": 0..1 data (max <= 1) is scaled, anything else clipped to 0..255
        values = np.nan_to_num(values.astype(np.float64), nan=0.0)
        scaled = values * 255.0 if values.size and values.max() <= 1.0 else values
        scaled = np.clip(scaled, 0, 255)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (alpha composited on white, high bit depths scaled; see the module doc)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _grey_to_uint8(image).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS, at_least: int | None = None) -> Image.Image:
    """Decoded, upright, RGB Pillow image (steps 1-4); raises ``ImageError``.

    At its own size, or with ``at_least``, a JPEG at the smallest DCT scale keeping both sides >= ``at_least``
    (other formats are always full size).
    """
    image = _open(data, max_pixels)
    try:
        if at_least is not None:
            # After the pixel-count check (the header's size), so the bomb guard is unchanged. A no-op for
            # formats other than JPEG; the square request keeps it independent of EXIF orientation.
            image.draft(None, (at_least, at_least))
        image.load()  # decode now: a truncated or corrupt file fails here
        ImageOps.exif_transpose(image, in_place=True)  # in place: no second full-size copy
        return to_rgb(image)
    except Image.DecompressionBombError as error:
        image.close()
        raise ImageError(Reason.TOO_MANY_PIXELS, str(error)) from error
    except MemoryError as error:
        image.close()
        raise ImageError(Reason.TOO_MANY_PIXELS, "out of memory while decoding") from error
    except Exception as error:  # decoders raise OSError, ValueError, SyntaxError, EOFError, struct.error, ...
        image.close()
        raise ImageError(Reason.UNREADABLE_IMAGE, f"cannot decode: {type(error).__name__}: {error}") from error


def load_image(data: bytes, size: int = DEFAULT_SIZE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> float32 ``[size, size, 3]`` RGB in 0..255, upright, resized once (BILINEAR); a big
    JPEG decoded at a reduced DCT scale first (see the module doc, "JPEG draft").

    Raises ``ImageError`` with reason ``not_an_image``, ``unreadable_image`` or ``too_many_pixels``.
    """
    rgb = decode_rgb(data, max_pixels, at_least=DRAFT_FACTOR * size)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE)
    return np.asarray(rgb, dtype=np.float32)
