"""Extract frozen Inception v3 features: photos manifest -> features table (``schemas.FEATURES``).

Input: a manifest (CSV or Parquet files, a glob or a completed directory; local or ``gs://``) with
``photo_id, lat, lng, image_uri``. Each image is read through Beam's ``FileSystems`` (so ``gs://`` URIs work),
decoded (JPEG/PNG/anything Pillow reads), converted to RGB and resized to 299x299, then run through Inception v3
without its top, average-pooled and frozen (2048-d) by ``RunInference`` on a ``.keras`` model file.
A manifest that already has an ``embedding`` column is passed through without extraction (validated, deduplicated).

Outputs (each completed atomically with ``_SUCCESS``): ``--output`` (features Parquet shards) and
``--dead_letters`` (default ``OUTPUT.dead_letters``): rows with a missing or bad lat/lng, a repeated photo_id,
a missing file, an unreadable or corrupt image, a failed inference, or (pass-through) a bad embedding.

Backbone: ``--backbone_model PATH.keras`` (a saved ``trainer.backbone.build_backbone`` model), or
``--backbone_weights PATH|imagenet|random`` to build one at launch (saved next to the output for the workers,
deleted after the run). ``imagenet`` needs a network; nothing else downloads anything.

Run locally (offline):

    python -m pipelines.extract_features --manifest photos.csv --output out/features \\
        --backbone_weights /models/inception_v3_notop.weights.h5

On Dataflow (workers need TensorFlow: use the project's SDK container, see docs/RUNNERS.md):

    python -m pipelines.extract_features --manifest gs://B/photos.parquet --output gs://B/features \\
        --backbone_model gs://B/models/backbone.keras --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://B/tmp --sdk_container_image=REGION-docker.pkg.dev/P/R/cplanet:latest \\
        --machine_type=n1-highmem-8
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from pipelines import common
from schemas import FEATURES, Reason, SchemaError, validate_manifest
from schemas import columns as c

JOB = "extract_features"
IMAGE_SIZE = 299
FEATURE_DIM = 2048
DEFAULT_INFERENCE_BATCH = 16
_OUTPUT_ROWS_PER_TABLE = 1024


# ----------------------------------------------------------------------------------------------- images


class ImageError(Exception):
    """An image could not be used; ``reason`` is a ``schemas.Reason``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_image_bytes(uri: str) -> bytes:
    """The file's bytes through ``FileSystems`` (local path or ``gs://``); ``ImageError`` if it is missing."""
    try:
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as error:  # FileSystems raises IOError/BeamIOError/FileNotFoundError depending on the scheme
        if not FileSystems.exists(uri):
            raise ImageError(Reason.MISSING_FILE, f"{uri}: no such file") from error
        raise ImageError(Reason.UNREADABLE_IMAGE, f"{uri}: cannot read: {error}") from error


def decode_image(data: bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decoded RGB image resized to size x size, float32 0..255 (the backbone does Inception's scaling)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(Reason.UNREADABLE_IMAGE, f"cannot decode image: {error}") from error
    return np.asarray(rgb, dtype=np.float32)


class _LoadImageFn(beam.DoFn):
    """Manifest row -> ((photo_id, lat, lng), image array), or a dead letter naming the problem."""

    def __init__(self, size: int = IMAGE_SIZE):
        self._size = size

    def process(self, row: dict):
        uri = row.get(c.IMAGE_URI)
        try:
            if not uri:
                raise ImageError(Reason.MISSING_FILE, "image_uri is empty")
            image = decode_image(read_image_bytes(uri), self._size)
        except ImageError as error:
            yield beam.pvalue.TaggedOutput(common.DEAD, common.dead_letter(JOB, error.reason, error.detail, row))
            return
        yield (row[c.PHOTO_ID], float(row[c.LAT]), float(row[c.LNG])), image


# ----------------------------------------------------------------------------------------------- model


def backbone_handler(model_path: str, batch_size: int = DEFAULT_INFERENCE_BATCH):
    """A keyed ``TFModelHandlerNumpy`` for the saved backbone (Keras 3 loads ``.keras`` files in safe mode)."""
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    handler = TFModelHandlerNumpy(
        model_path,
        load_model_args={"safe_mode": True},
        min_batch_size=1,
        max_batch_size=batch_size,
    )
    return KeyedModelHandler(handler)


def save_backbone(weights: str | None, directory: str) -> str:
    """Build the backbone (``trainer.backbone``) and save it as ``backbone.keras`` in ``directory``."""
    from trainer.backbone import build_backbone

    model = build_backbone(None if weights in (None, "random") else weights)
    if "://" not in directory:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "backbone.keras")
        model.save(path)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "backbone.keras")
        model.save(local)
        path = FileSystems.join(directory, "backbone.keras")
        with open(local, "rb") as src, FileSystems.create(path) as dst:
            dst.write(src.read())
    return path


def _feature_row(keyed_result) -> dict:
    (photo_id, lat, lng), result = keyed_result
    embedding = np.asarray(result.inference, dtype=np.float32).reshape(-1)
    return {c.PHOTO_ID: photo_id, c.LAT: lat, c.LNG: lng, c.EMBEDDING: embedding}


def _failed_inference_letters(failed) -> Iterator[dict]:
    batch, error = failed
    for key, _image in batch:
        photo_id, lat, lng = key
        row = {c.PHOTO_ID: photo_id, c.LAT: lat, c.LNG: lng}
        yield common.dead_letter(JOB, Reason.INFERENCE_ERROR, f"{type(error).__name__}: {error}", row)


def rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    """Feature rows -> one RecordBatch with a flat float32 embedding buffer (no per-value Python objects)."""
    emb = np.stack([r[c.EMBEDDING] for r in rows]).astype(np.float32)
    offsets = pa.array(np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [
            pa.array([r[c.PHOTO_ID] for r in rows], pa.string()),
            pa.array([r[c.LAT] for r in rows], pa.float64()),
            pa.array([r[c.LNG] for r in rows], pa.float64()),
            pa.ListArray.from_arrays(offsets, pa.array(emb.reshape(-1))),
        ],
        names=[c.PHOTO_ID, c.LAT, c.LNG, c.EMBEDDING],
    )


def _manifest_rows(batch: pa.RecordBatch) -> Iterator[dict]:
    yield from batch.select([c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI]).to_pylist()


class ExtractFeatures(beam.PTransform):
    """Validated, deduplicated manifest batches (with ``image_uri``) -> outputs ``features`` (RecordBatches of
    ``schemas.FEATURES`` columns) and ``dead_letters`` (missing file, unreadable image, failed inference)."""

    def __init__(self, model_path: str, inference_batch: int = DEFAULT_INFERENCE_BATCH, image_size: int = IMAGE_SIZE):
        super().__init__()
        self._model_path, self._batch, self._size = model_path, inference_batch, image_size

    def expand(self, batches):
        images = (
            batches
            | "One element per photo" >> beam.FlatMap(_manifest_rows)
            # Decoding and inference are the slow steps: let the runner spread photos over workers.
            | "Spread photos over workers" >> beam.Reshuffle()
            | "Read and decode images" >> beam.ParDo(_LoadImageFn(self._size)).with_outputs(common.DEAD, main="images")
        )
        predictions, failures = (
            images["images"]
            | "Run the backbone"
            >> RunInference(backbone_handler(self._model_path, self._batch)).with_exception_handling()
        )
        features = (
            predictions
            | "Make feature rows" >> beam.Map(_feature_row)
            | "Group rows into batches" >> beam.BatchElements(min_batch_size=1, max_batch_size=_OUTPUT_ROWS_PER_TABLE)
            | "Make Arrow batches" >> beam.Map(rows_to_batch)
        )
        failed = failures.failed_inferences | "Dead-letter failed inferences" >> beam.FlatMap(_failed_inference_letters)
        dead = (images[common.DEAD], failed) | "Gather image dead letters" >> beam.Flatten()
        return {"features": features, common.DEAD: dead}


def build_pipeline(
    pipeline: beam.Pipeline,
    manifest: str,
    features_dir: str,
    dead_letters_dir: str,
    model_path: str | None,
    embedding_dim: int | None = None,
    inference_batch: int = DEFAULT_INFERENCE_BATCH,
) -> str:
    """Read, validate, deduplicate, extract (or pass through), write. Returns ``"extract"`` or ``"passthrough"``."""
    schema = common.table_schema(manifest)
    validate_manifest(schema)
    passthrough = c.EMBEDDING in schema.names
    if not passthrough and model_path is None:
        raise SchemaError("manifest has no 'embedding' column, so a backbone is needed (--backbone_model/--backbone_weights)")
    columns = [n for n in (c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI, c.EMBEDDING) if n in schema.names]
    batches = pipeline | "Read the manifest" >> common.ReadTableBatches(manifest, JOB, columns)
    if passthrough and embedding_dim is None:
        from pipelines.bucket_cells import infer_embedding_dim

        embedding_dim = infer_embedding_dim(manifest)
    checked = batches | "Validate photos" >> common.ValidateBatches(
        JOB, embedding_dim if passthrough else None, need_embedding=passthrough
    )
    unique = checked[common.VALID] | "Drop repeated photo ids" >> common.DropDuplicatePhotoIds(JOB)
    dead = [checked[common.DEAD], unique[common.DEAD]]
    if passthrough:
        features = unique[common.VALID]
    else:
        extracted = unique[common.VALID] | "Extract features" >> ExtractFeatures(model_path, inference_batch)
        features = extracted["features"]
        dead.append(extracted[common.DEAD])
    _ = (
        features
        | common.CountRowsOut(JOB)
        | "Write features" >> common.WriteBatchesToParquet(features_dir, FEATURES)
    )
    _ = tuple(dead) | "Write dead letters" >> common.WriteDeadLetters(dead_letters_dir, JOB)
    return "passthrough" if passthrough else "extract"


def run(argv: Sequence[str] | None = None) -> common.JobSummary:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="CSV/Parquet file, glob or directory")
    parser.add_argument("--output", required=True, help="features artifact directory")
    parser.add_argument("--dead_letters", default=None, help="default: OUTPUT.dead_letters")
    parser.add_argument("--backbone_model", default=None, help="a saved backbone .keras file")
    parser.add_argument(
        "--backbone_weights", default=None, help="build the backbone at launch: PATH to weights, 'imagenet' or 'random'"
    )
    parser.add_argument("--embedding_dim", type=int, default=None, help="pass-through manifests: expected length")
    parser.add_argument("--inference_batch", type=int, default=DEFAULT_INFERENCE_BATCH, help=f"images per backbone call (default {DEFAULT_INFERENCE_BATCH})")
    args, options = common.parse_job_args(parser, argv)
    if args.backbone_model and args.backbone_weights:
        parser.error("give --backbone_model or --backbone_weights, not both")
    output = args.output.rstrip("/")
    features = common.StagedOutput(output)
    dead_letters = common.StagedOutput(args.dead_letters or f"{output}.dead_letters")
    model_dir = None
    model_path = args.backbone_model
    schema = common.table_schema(args.manifest)
    if model_path is None and c.EMBEDDING not in schema.names:
        if args.backbone_weights is None:
            parser.error("the manifest has no embeddings: give --backbone_model or --backbone_weights (PATH|imagenet|random)")
        model_dir = f"{output}.model-{uuid.uuid4().hex[:12]}"
        logging.getLogger(__name__).info("building the backbone (weights: %s) into %s", args.backbone_weights, model_dir)
        model_path = save_backbone(args.backbone_weights, model_dir)
    try:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(
            pipeline,
            args.manifest,
            features.path,
            dead_letters.path,
            model_path,
            embedding_dim=args.embedding_dim,
            inference_batch=args.inference_batch,
        )
        return common.run_job(pipeline, JOB, [features, dead_letters])
    finally:
        if model_dir is not None and FileSystems.exists(model_dir):
            FileSystems.delete([model_dir])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run()
