"""TestPipeline + assert_that on beam.Create input for ``pipelines.extract_features.ExtractFeatures``.

A tiny saved Keras backbone (per-channel mean of the image) stands in for Inception, so the expected feature
of each photo is NumPy's channel mean of the decoded image; a missing file and a text file named .jpg become
dead letters with their reasons.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

import imagery
from pipelines import extract_features
from schemas import Reason
from schemas import columns as c

SIZE = 16


def _mean_backbone(path: str) -> str:
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(path)
    return path


def test_extract_features_gives_the_backbone_output_per_photo_and_dead_letters_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        path = tmp_path / f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 255, size=(20 + i, 24, 3), dtype=np.uint8)).save(path, quality=95)
        rows.append({c.PHOTO_ID: f"p{i}", c.LAT: float(i), c.LNG: -float(i), c.IMAGE_URI: str(path)})
    (tmp_path / "text.jpg").write_text("not an image")
    rows.append({c.PHOTO_ID: "text", c.LAT: 1.0, c.LNG: 2.0, c.IMAGE_URI: str(tmp_path / "text.jpg")})
    rows.append({c.PHOTO_ID: "gone", c.LAT: 1.0, c.LNG: 2.0, c.IMAGE_URI: str(tmp_path / "gone.jpg")})
    want = []
    for row in rows[:3]:
        image = imagery.load_image(open(row[c.IMAGE_URI], "rb").read(), SIZE)
        mean = image.reshape(-1, 3).astype(np.float64).mean(axis=0)
        want.append((row[c.PHOTO_ID], row[c.LAT], row[c.LNG], mean))
    model = _mean_backbone(str(tmp_path / "backbone.keras"))
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([pa.RecordBatch.from_pylist(rows)]) | extract_features.ExtractFeatures(
            model, inference_batch=2, image_size=SIZE
        )
        features = out["features"] | beam.FlatMap(
            lambda b: [(r[c.PHOTO_ID], r[c.LAT], r[c.LNG], r[c.EMBEDDING]) for r in b.to_pylist()]
        )

        def same_features(actual):
            got = sorted(actual, key=lambda r: r[0])
            assert [r[:3] for r in got] == [w[:3] for w in want]
            for (_, _, _, embedding), (_, _, _, mean) in zip(got, want):
                np.testing.assert_allclose(embedding, mean, rtol=1e-5, atol=1e-5)

        assert_that(features, same_features, label="features")
        dead = out["dead_letters"] | beam.Map(lambda d: (d[c.PHOTO_ID], d[c.REASON]))
        assert_that(dead, equal_to([("text", Reason.NOT_AN_IMAGE), ("gone", Reason.MISSING_FILE)]), label="dead")
