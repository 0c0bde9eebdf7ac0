"""Extract frozen backbone features: photos manifest -> features table (``schemas.FEATURES``).

Input: a manifest (CSV or Parquet files, a glob or a completed directory; local or ``gs://``) with ``photo_id``,
``image_uri`` and, for training photos, ``lat, lng`` (e.g. ``OUT/manifest`` of ``pipelines.ingest_photos``).
A manifest without ``lat``/``lng`` columns (or any manifest with ``--no_require_location``, e.g. what
``ingest_photos --no_require_gps`` writes) is a list of photos to geolocate: its features have null lat/lng
(``batch_predict`` needs none; the training path, ``bucket_cells``, dead-letters such rows).
Each image is read through Beam's ``FileSystems`` (so ``gs://`` URIs work) and preprocessed by
``imagery.load_image`` -- the one preprocessing shared with ``batch_predict`` and ``locate``: pixel count
checked from the header (decompression bombs), EXIF orientation, any mode to RGB, one BILINEAR resize to
299x299, a big JPEG decoded at a reduced DCT scale first -- then run through the frozen backbone by
``RunInference`` on a ``.keras`` model file (loaded once per worker, batches of ``--inference_batch``). Decoding
runs on a small thread pool ahead of the model (``pipelines.image_input``), so it overlaps inference.
A manifest that already has an ``embedding`` column is passed through without extraction (validated, deduplicated).

Outputs (each completed atomically with ``_SUCCESS``): ``--output`` (features Parquet shards, plus
``backbone.json``: backbone, weight source, weights checksum, feature size) and ``--dead_letters`` (default
``OUTPUT.dead_letters``): rows with a bad lat/lng, a repeated photo_id, a missing file, an image that is not an
image, is unreadable or has too many pixels, a failed inference, or (pass-through) a bad embedding.

Backbone (``trainer.backbone.load_backbone``): ``--backbone inception_v3`` (default, the paper's) or a path to
a ``.keras`` model mapping 299x299x3 0..255 images to a vector; ``--backbone_weights PATH|imagenet|random``
(required for ``inception_v3``; for a ``.keras`` model its own weights are the default). The model is built at
launch and saved next to the output for the workers (deleted after the run); a ``.keras`` backbone without
``--backbone_weights`` is used as it is. ``imagenet`` needs the Keras cache or a network, and says so in one line
otherwise. Nothing else downloads anything.

Run locally (offline):

    python -m pipelines.extract_features --manifest out/photos/manifest --output out/features \\
        --backbone_weights /models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5

On Dataflow (workers need TensorFlow: use the project's SDK container, see docs/RUNNERS.md):

    python -m pipelines.extract_features --manifest gs://B/photos.parquet --output gs://B/features \\
        --backbone gs://B/models/backbone.keras --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://B/tmp --sdk_container_image=REGION-docker.pkg.dev/P/R/cplanet:latest \\
        --machine_type=n1-highmem-8
"""

from __future__ import annotations

import argparse
import json
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
from pipelines.image_input import DecodeImagesFn, read_image_bytes  # noqa: F401 - read_image_bytes: older import path
from schemas import FEATURES, Reason, SchemaError, validate_manifest
from schemas import columns as c
from schemas.cli import Parser
from schemas.io import is_remote

JOB = "extract_features"
IMAGE_SIZE = 299
FEATURE_DIM = 2048
DEFAULT_INFERENCE_BATCH = 16
BACKBONE_INFO_FILE = "backbone.json"
LOG = logging.getLogger(__name__)
_OUTPUT_ROWS_PER_TABLE = 1024


# ----------------------------------------------------------------------------------------------- images


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _split_manifest_row(row: dict):
    """Manifest row -> (key (photo_id, lat or None, lng or None), image_uri, the row for a dead letter)."""
    key = (row[c.PHOTO_ID], _float_or_none(row.get(c.LAT)), _float_or_none(row.get(c.LNG)))
    return key, row.get(c.IMAGE_URI), row


# ----------------------------------------------------------------------------------------------- model


def backbone_handler(model_path: str, batch_size: int = DEFAULT_INFERENCE_BATCH):
    """A keyed ``TFModelHandlerNumpy`` for the saved backbone (Keras 3 loads ``.keras`` files in safe mode)."""
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    handler = TFModelHandlerNumpy(
        model_path,
        load_model_args={"safe_mode": True},
        # Fixed batches (the last one smaller): BatchElements' adaptive sizing would start at 1 image per call
        # and grow batch by batch, and small batches use the backbone less well.
        min_batch_size=batch_size,
        max_batch_size=batch_size,
    )
    return KeyedModelHandler(handler)


def save_backbone(model, directory: str) -> str:
    """Save a backbone model as ``backbone.keras`` in ``directory`` (local or ``gs://``) for the workers."""
    if not is_remote(directory):
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


def prepare_backbone(backbone: str, weights: str | None, directory: str) -> tuple[str, dict]:
    """(model file the workers load, ``load_backbone`` info). Raises ``trainer.backbone.BackboneError``.

    A ``.keras`` backbone without ``weights`` is used as it is (a remote one unchecked, its info without a
    checksum); anything else is built here and saved into ``directory``.
    """
    if backbone.endswith(".keras") and weights is None and is_remote(backbone):
        return backbone, {"backbone": backbone, "weights": backbone, "weights_sha256": None, "feature_dim": None}
    from trainer.backbone import load_backbone

    model, info = load_backbone(backbone, weights)
    if info["weights"] == "random":
        LOG.warning("backbone %s has RANDOM weights: its features carry no information about places", backbone)
    if backbone.endswith(".keras") and weights is None:
        return backbone, info
    return save_backbone(model, directory), info


def write_backbone_info(directory: str, info: dict) -> None:
    """``backbone.json`` beside the features shards: which backbone and weights made them."""
    with FileSystems.create(FileSystems.join(directory, BACKBONE_INFO_FILE)) as handle:
        handle.write(json.dumps(info, indent=2, sort_keys=True).encode())


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


def _with_null_location(batch: pa.RecordBatch) -> pa.RecordBatch:
    for name in (c.LAT, c.LNG):
        if name not in batch.schema.names:
            batch = batch.append_column(name, pa.nulls(batch.num_rows, pa.float64()))
    return batch


def _manifest_rows(batch: pa.RecordBatch) -> Iterator[dict]:
    # Photos to geolocate have no lat/lng columns; their rows get None.
    yield from batch.select([n for n in (c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI) if n in batch.schema.names]).to_pylist()


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
            # Decoding runs ahead on a thread pool, overlapping the backbone fused after it (image_input's doc).
            | "Read and decode images"
            >> beam.ParDo(DecodeImagesFn(JOB, _split_manifest_row, self._size)).with_outputs(common.DEAD, main="images")
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
    require_location: bool = True,
) -> str:
    """Read, validate, deduplicate, extract (or pass through), write. Returns ``"extract"`` or ``"passthrough"``.

    Photos to geolocate: a manifest without ``lat``/``lng`` columns, or ``require_location=False`` (their
    lat/lng are then not read at all), gives features with null lat/lng.
    """
    schema = common.table_schema(manifest)
    need_location = require_location and (c.LAT in schema.names or c.LNG in schema.names)
    validate_manifest(schema, need_location=need_location)
    passthrough = c.EMBEDDING in schema.names
    if not passthrough and model_path is None:
        raise SchemaError("manifest has no 'embedding' column, so a backbone is needed (--backbone/--backbone_weights)")
    wanted = (c.PHOTO_ID, c.LAT, c.LNG, c.IMAGE_URI, c.EMBEDDING) if need_location else (c.PHOTO_ID, c.IMAGE_URI, c.EMBEDDING)
    columns = [n for n in wanted if n in schema.names]
    batches = pipeline | "Read the manifest" >> common.ReadTableBatches(manifest, JOB, columns)
    if passthrough and embedding_dim is None:
        from pipelines.bucket_cells import infer_embedding_dim

        embedding_dim = infer_embedding_dim(manifest)
    checked = batches | "Validate photos" >> common.ValidateBatches(
        JOB, embedding_dim if passthrough else None, need_embedding=passthrough, need_location=need_location
    )
    unique = checked[common.VALID] | "Drop repeated photo ids" >> common.DropDuplicatePhotoIds(JOB)
    dead = [checked[common.DEAD], unique[common.DEAD]]
    if passthrough:
        features = unique[common.VALID]
        if not need_location:
            features = features | "Leave locations empty" >> beam.Map(_with_null_location)
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


def parser() -> argparse.ArgumentParser:
    """The job's flags, declared once: ``run`` parses argv with it, ``run_all`` fills it through ``job_args``."""
    p = Parser(prog="pipelines.extract_features", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=common.path_flag, help="CSV/Parquet file, glob or directory")
    p.add_argument("--output", required=True, type=common.path_flag, help="features artifact directory")
    p.add_argument("--dead_letters", default=None, type=common.path_flag, help="default: OUTPUT.dead_letters")
    p.add_argument(
        "--backbone", default=None, help="'inception_v3' (default) or a .keras model: 299x299x3 0..255 images -> vector"
    )
    p.add_argument(
        "--backbone_weights", default=None, help="PATH to weights, 'imagenet' or 'random' (tests); see trainer.backbone"
    )
    # Older name of --backbone PATH.keras (a saved backbone used as it is).
    p.add_argument("--backbone_model", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--no_require_location",
        action="store_true",
        help="photos to geolocate: lat/lng are not read, the features get null lat/lng (implied without lat/lng columns)",
    )
    p.add_argument("--embedding_dim", type=int, default=None, help="pass-through manifests: expected length")
    p.add_argument("--inference_batch", type=int, default=DEFAULT_INFERENCE_BATCH,
                   help=f"images per backbone call (default {DEFAULT_INFERENCE_BATCH})")
    return common.add_job_flags(p)


def launch(args: argparse.Namespace, options) -> common.JobSummary | None:
    """Build and run the job from typed arguments (``parser()``'s flags) and ``PipelineOptions``."""
    from schemas.cli import UsageError

    if args.backbone_model and args.backbone:
        raise UsageError("--backbone_model: give --backbone or --backbone_model, not both")
    if args.backbone_model and args.backbone_weights:
        raise UsageError("--backbone_model: give --backbone_model or --backbone_weights, not both")
    backbone = args.backbone_model or args.backbone or "inception_v3"
    output = args.output.rstrip("/")
    features = common.StagedOutput(output)
    dead_letters = common.StagedOutput(args.dead_letters or f"{output}.dead_letters")
    model_dir = None
    model_path, info = None, None
    schema = common.table_schema(args.manifest)
    if c.EMBEDDING not in schema.names:
        if backbone == "inception_v3" and args.backbone_weights is None:
            raise UsageError(
                f"--manifest {args.manifest} has no embeddings: give --backbone_weights PATH|imagenet|random "
                "(or --backbone PATH.keras with its own weights)"
            )
        model_dir = f"{output}.model-{uuid.uuid4().hex[:12]}"
        from trainer.backbone import BackboneError

        try:
            model_path, info = prepare_backbone(backbone, args.backbone_weights, model_dir)
        except BackboneError as error:
            raise SystemExit(str(error)) from None
        LOG.info("backbone %s, weights %s (sha256 %s)", info["backbone"], info["weights"], info["weights_sha256"])
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
            require_location=not args.no_require_location,
        )
        before_commit = None if info is None else (lambda _summary: write_backbone_info(features.path, info))
        return common.run_job(pipeline, JOB, [features, dead_letters], before_commit=before_commit, args=args)
    finally:
        if model_dir is not None and FileSystems.exists(model_dir):
            FileSystems.delete([model_dir])




def run(argv: Sequence[str] | None = None) -> common.JobSummary | None:
    args, options = common.parse_job_args(parser(), argv)
    return launch(args, options)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.extract_features")
