"""Image files -> model inputs for the image jobs (``extract_features``, ``batch_predict --input_kind images``).

``DecodeImagesFn`` reads each file through Beam's ``FileSystems`` (local or ``gs://``) and preprocesses it with
``imagery.load_image`` (the one preprocessing every path shares), on a small thread pool that runs ahead of the
elements it has emitted: while the model downstream (fused into the same stage by the runner) works on one
batch, the next images are already being read and decoded. Pillow and the file reads release the GIL, so the
decoding really overlaps the inference instead of alternating with it. Outputs keep the input order and each
one its own element's window and timestamp; unreadable files become dead letters (tag ``common.DEAD``) as before.

    >>> beam.ParDo(DecodeImagesFn("extract_features", split=my_split)).with_outputs(common.DEAD, main="images")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.windowed_value import WindowedValue

import imagery
from imagery import ImageError
from pipelines import common
from schemas import Reason

IMAGE_SIZE = 299
# Images decoded ahead of the one being emitted: two of the model's batches of 16, so the next batch is ready
# when the model finishes the current one (about 32 MB of float32 pixels in flight per worker).
DECODE_AHEAD = 32
# Two threads: one would do for local files (decoding is ~5% of the model's CPU), two hide gs:// latency.
DECODE_THREADS = 2


def read_image_bytes(uri: str) -> bytes:
    """The file's bytes through ``FileSystems`` (local path or ``gs://``); ``ImageError`` if it is missing."""
    try:
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as error:  # FileSystems raises IOError/BeamIOError/FileNotFoundError depending on the scheme
        if not FileSystems.exists(uri):
            raise ImageError(Reason.MISSING_FILE, f"{uri}: no such file") from error
        raise ImageError(Reason.UNREADABLE_IMAGE, f"{uri}: cannot read: {error}") from error


def read_and_decode(uri: str | None, size: int = IMAGE_SIZE) -> np.ndarray:
    """``uri`` -> ``imagery.load_image`` pixels; ``ImageError`` (missing file, not an image, bomb, ...)."""
    if not uri:
        raise ImageError(Reason.MISSING_FILE, "image_uri is empty")
    return imagery.load_image(read_image_bytes(uri), size)


class DecodeImagesFn(beam.DoFn):
    """element -> ``(key, float32 [size, size, 3])``, or a dead letter ``common.dead_letter(job, reason, ...)``.

    ``split(element) -> (key, uri, record)``: what to key the image by, where it is, and the row a dead letter
    shows. ``name_uri``: put the URI in front of the dead letter's detail (``batch_predict``'s records do).
    """

    def __init__(self, job: str, split: Callable, size: int = IMAGE_SIZE, ahead: int = DECODE_AHEAD,
                 threads: int = DECODE_THREADS, name_uri: bool = False):
        self._job, self._split, self._size = job, split, size
        self._ahead, self._threads, self._name_uri = max(1, ahead), max(1, threads), name_uri
        self._pool: ThreadPoolExecutor | None = None
        self._pending: collections.deque = collections.deque()

    def setup(self):
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="decode-images")

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, element, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        key, uri, record = self._split(element)
        future: Future = self._pool.submit(read_and_decode, uri, self._size)
        self._pending.append((future, key, uri, record, window, timestamp))
        # Emit in order: everything already decoded at the front, and wait for the oldest once DECODE_AHEAD
        # images are in flight (bounded memory; the runner's next elements keep the pool busy meanwhile).
        while self._pending and (len(self._pending) > self._ahead or self._pending[0][0].done()):
            yield self._output(self._pending.popleft())

    def finish_bundle(self):
        while self._pending:
            yield self._output(self._pending.popleft())

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _output(self, pending):
        future, key, uri, record, window, timestamp = pending
        try:
            return WindowedValue((key, future.result()), timestamp, (window,))
        except ImageError as error:
            detail = f"{uri}: {error.detail}" if self._name_uri and not error.detail.startswith(f"{uri}:") else error.detail
            letter = common.dead_letter(self._job, error.reason, detail, record)
            return beam.pvalue.TaggedOutput(common.DEAD, WindowedValue(letter, timestamp, (window,)))
