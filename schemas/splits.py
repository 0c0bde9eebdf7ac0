"""Deterministic splits of photo ids: the same photo lands in the same split in every process, run and machine.

A photo's position in [0, 1) is the first 8 bytes (big-endian) of ``digest(salt + photo_id as UTF-8)`` divided
by 2**64; it is in the held-out part when that position is below the fraction. One rule, two uses:

- ``pipelines.make_examples``' eval split: ``digest="md5"``, no salt. The rule is recorded in every examples
  artifact (``SPLIT_RULE``, the ``split_rule`` key of ``examples.json``), so it must not change.
- ``sampledata``'s scene sample (train/test of YFCC25600): ``digest="sha256"`` salted with ``"{seed}:"``, so
  another seed gives another split. Its earlier code divided the top 53 bits by 2**53 instead of the 64 bits
  by 2**64; the two can differ only for a draw within 2**-53 of the fraction, and give the same held-out
  photos on the whole bundled set for seeds 0-19 and fractions 0.1-0.5 (checked when they were merged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

SPLIT_RULE = "eval if int.from_bytes(md5(photo_id utf-8)[:8], 'big') / 2**64 < eval_fraction"


def split_positions(photo_ids: Sequence[str], *, digest: str = "md5", salt: bytes = b"") -> np.ndarray:
    """Each photo id's stable position in [0, 1) (float64), from ``hashlib.new(digest)`` of salt + id."""
    return np.fromiter(
        (int.from_bytes(hashlib.new(digest, salt + str(p).encode("utf-8")).digest()[:8], "big") / 2.0**64 for p in photo_ids),
        dtype=np.float64,
        count=len(photo_ids),
    )


def held_out(photo_ids: Sequence[str], fraction: float, *, digest: str = "md5", salt: bytes = b"") -> np.ndarray:
    """True where the photo's position is below ``fraction`` (about that share of the ids, fixed per id)."""
    return split_positions(photo_ids, digest=digest, salt=salt) < fraction
