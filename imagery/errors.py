"""The one exception of the image path."""

from __future__ import annotations


class ImageError(Exception):
    """An image (or its EXIF) cannot be used; ``reason`` is a ``schemas.Reason``, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # picklable across Beam workers
        return type(self), (self.reason, self.detail)
