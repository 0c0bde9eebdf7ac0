"""pipelines.image_input: the image jobs' decoding, run ahead on a thread pool, loses and reorders nothing."""

from __future__ import annotations

import threading
import time

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.windowed_value import WindowedValue

import imagery
from pipelines import common
from pipelines.image_input import DecodeImagesFn
from schemas import Reason
from schemas import columns as c
from tests import photo_files as pf


def _split(element):
    photo_id, uri = element
    return photo_id, uri, {c.PHOTO_ID: photo_id, c.IMAGE_URI: uri}


def _files(tmp_path, n=6):
    rng = np.random.default_rng(0)
    good = []
    for i in range(n):
        h, w = (40 + 7 * i, 60 + 5 * i)
        path = pf.write(tmp_path, f"p{i}.jpg", pf.jpeg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        good.append((f"p{i}", str(path)))
    broken = pf.write(tmp_path, "broken.jpg", pf.jpeg()[:200])
    text = pf.write(tmp_path, "notes.jpg", b"not an image at all")
    bad = [("missing", str(tmp_path / "nope.jpg")), ("broken", str(broken)), ("text", str(text)), ("empty", "")]
    return good, bad


def test_every_photo_comes_out_once_as_load_image_pixels_or_a_dead_letter(tmp_path):
    good, bad = _files(tmp_path)
    expected = {photo_id: imagery.load_image(open(uri, "rb").read()) for photo_id, uri in good}
    elements = good[:3] + bad + good[3:]
    with TestPipeline() as p:
        out = (
            p
            | beam.Create(elements)
            | beam.ParDo(DecodeImagesFn("job", _split, ahead=2, threads=2)).with_outputs(common.DEAD, main="images")
        )
        sums = out["images"] | beam.Map(lambda kv: (kv[0], kv[1].shape, float(kv[1].sum())))
        assert_that(sums, equal_to([(k, v.shape, float(v.sum())) for k, v in expected.items()]), label="images")
        letters = out[common.DEAD] | beam.Map(lambda d: (d[c.JOB], d[c.REASON]))
        assert_that(
            letters,
            equal_to([("job", Reason.MISSING_FILE), ("job", Reason.UNREADABLE_IMAGE), ("job", Reason.NOT_AN_IMAGE),
                      ("job", Reason.MISSING_FILE)]),
            label="dead letters",
        )


def test_decoding_runs_ahead_in_order_and_keeps_each_elements_window(tmp_path, monkeypatch):
    """Driven by hand as the runner does: while element k is processed the pool already decodes the next ones,
    outputs keep the input order, and each output carries its own element's window and timestamp."""
    good, bad = _files(tmp_path, n=8)
    elements = good + bad[:1]
    started = []
    real = imagery.load_image

    def slow_load(data, size=299):
        started.append(threading.current_thread().name)
        time.sleep(0.02)
        return real(data, size)

    monkeypatch.setattr(imagery, "load_image", slow_load)
    fn = DecodeImagesFn("job", _split, ahead=4, threads=2)
    fn.setup()
    fn.start_bundle()
    outputs = []
    windows = [window.IntervalWindow(i, i + 1) for i in range(len(elements))]
    for i, element in enumerate(elements):
        outputs += list(fn.process(element, window=windows[i], timestamp=i))
        assert len(outputs) >= i + 1 - 4  # never more than `ahead` images held back
    outputs += list(fn.finish_bundle())
    fn.teardown()
    assert all(name.startswith("decode-images") for name in started) and len(started) == len(good)
    main = [o for o in outputs if isinstance(o, WindowedValue)]
    dead = [o for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert [o.value[0] for o in main] == [k for k, _ in good]
    assert [(o.timestamp.micros // 1_000_000, o.windows) for o in main] == [(i, (windows[i],)) for i in range(len(good))]
    assert len(dead) == 1 and dead[0].tag == common.DEAD and dead[0].value.value[c.REASON] == Reason.MISSING_FILE
    assert dead[0].value.windows == (windows[len(good)],)
    np.testing.assert_array_equal(main[0].value[1], real(open(good[0][1], "rb").read()))
