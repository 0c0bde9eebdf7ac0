"""TEMPORARY stand-in written by the "locate" helper so its branch can be tested before the "ingest" helper's
``imagery`` package is merged; the coordinator keeps ingest's version. Same interface:
``load_image(data, size=299) -> float32 [size, size, 3] in 0..255`` or ``ImageError(reason, detail)``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from schemas import Reason

MAX_PIXELS = 100_000_000


class ImageError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def load_image(data: bytes, size: int = 299) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ImageError(Reason.UNREADABLE_IMAGE, f"{image.width}x{image.height} pixels is too many")
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = upright.convert("RGB").resize((size, size), Image.BILINEAR)
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ImageError(Reason.UNREADABLE_IMAGE, f"cannot decode image: {error}") from error
    return np.asarray(rgb, dtype=np.float32)
