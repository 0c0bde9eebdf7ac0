"""Nightly batch prediction: a manifest of photos -> RunInference (multi-head model) -> combiner -> predictions.

Input: a manifest (CSV/Parquet file, glob or completed directory) of ``photo_id`` and either ``embedding``
(features from ``pipelines.extract_features``: the main path, model ``features_model.keras``) or ``image_uri``
(JPEG/PNG/TIFF/HEIC files, decoded by ``imagery.load_image``; model ``geolocator.keras``, which holds the
backbone), e.g. what ``pipelines.ingest_photos`` writes. lat/lng are not needed (photos to geolocate have none).
A model whose backbone has random weights is refused unless ``--allow_random_backbone`` (then a warning every run).
Output: ``OUTPUT/run_date=YYYY-MM-DD/`` with ``predictions-*.parquet`` (``schemas.PREDICTIONS``: one row per
photo and method, with the location, its nearest place (``country_code``, ``admin1``, ``place_name``, offline
GeoNames via ``partition_gen.places``), score, top-k partitions and the model and partitions ids) and ``_SUCCESS``;
dead letters go to the sibling tree ``OUTPUT.dead_letters/run_date=YYYY-MM-DD/`` (``--dead_letters``), so
``pandas.read_parquet``, ``pyarrow.dataset`` or a BigQuery external table over OUTPUT see predictions only. The
job itself checks its accounting (rows in = photos predicted + dead letters, at least one row unless
``--allow_empty``, dead letters at most ``--max_dead_letter_fraction``) and only then swaps both folders in, so a
rerun of the same date replaces the previous output atomically and a failed or killed run leaves it untouched.

Methods (``--methods``): the nightly default is NormalizedSum over every set of the partitions artifact
(e.g. "CPlaNet[1-5,PlaNet]"); ``--methods paper`` gives the rows of the paper's Table 2 ("ClassSet i",
"PlaNet", "SimpleSum[1-N]", "CPlaNet[1-2]", "CPlaNet[1-N]", "CPlaNet[1-N,PlaNet]") for ``pipelines.evaluate``;
or name them, separated by ';'.

Local (offline runner)::

    python -m pipelines.batch_predict --manifest out/features --model out/model \\
        --partitions out/partitions --output out/predictions --run_date 2024-05-01

Dataflow (see docs/SCHEDULING.md for the Flex Template and the Airflow/cron schedule)::

    python -m pipelines.batch_predict --manifest gs://B/new/2024-05-01/*.parquet --model gs://B/model \\
        --partitions gs://B/partitions --output gs://B/predictions --run_date 2024-05-01 \\
        --runner DataflowRunner --project P --region R --temp_location gs://B/tmp --setup_file ./setup.py

Why a ModelHandler of our own: the heads' outputs are a dict keyed by set name; Beam's
``TFModelHandlerNumpy`` loads with ``tf.keras.models.load_model`` and splits the model output per example
assuming one tensor, so a dict of heads would come back as its keys. ``KerasDictModelHandler`` loads the
``.keras`` file with ``keras.saving.load_model(path, safe_mode=True)`` and splits every head per example.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from partition_gen import refine
from partition_gen.evaluation import default_method, parse_method, standard_methods
from partition_gen.partitions import Partitions, check_model_matches, load_partitions
from partition_gen.places import gazetteer
from pipelines.common import (
    DEAD,
    ROWS_OUT,
    VALID,
    DropDuplicatePhotoIds,
    ReadTableBatches,
    StagedOutput,
    WriteDeadLetters,
    add_job_flags,
    batch_row,
    dead_letter,
    ledger,
    parse_job_args,
    path_flag,
    row_problems,
    run_job,
    table_schema,
)
from pipelines.image_input import DecodeImagesFn
from schemas import PREDICTIONS, Reason
from schemas import columns as c
from schemas.artifacts import absolute, read_model_manifest
from schemas.cli import Parser

LOG = logging.getLogger(__name__)

JOB = "batch_predict"
FEATURES_MODEL = "features_model.keras"
GEOLOCATOR_MODEL = "geolocator.keras"
FEATURES, IMAGES = "features", "images"
PREDICTIONS_PREFIX = "predictions"
# Tagged output of CombineHeads: (rows_out, photos predicted in a batch), the job's rows out.
PREDICTED = "photos_predicted"
IMAGE_SIZE = 299
# Images per model call: fixed (BatchElements' adaptive sizing would grow towards 256 images: ~0.3 GB of pixels
# plus Inception's activations per call); embeddings keep the adaptive 8..256.
IMAGE_BATCH = 16
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ------------------------------------------------------------------------------------------------- model


def _local_copy(uri: str) -> str:
    """Keras loads from local files only; remote models are copied to a temporary file once per worker."""
    if "://" not in uri:
        return uri
    local = os.path.join(tempfile.mkdtemp(prefix="cplanet-model-"), os.path.basename(uri))
    with FileSystems.open(uri) as src, open(local, "wb") as dst:
        dst.write(src.read())
    return local


class KerasDictModelHandler(ModelHandler):
    """Numpy examples (an embedding or an image) -> ``PredictionResult`` with ``{set_name: probabilities}``."""

    def __init__(self, model_uri: str, set_names: Sequence[str], model_id: str, min_batch_size: int = 8,
                 max_batch_size: int = 256, keep_inputs: bool = False):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._keep_inputs = keep_inputs
        self._model_uri = model_uri
        self._set_names = list(set_names)
        self._model_id = model_id

    def load_model(self):
        import keras

        model = keras.saving.load_model(_local_copy(self._model_uri), safe_mode=True)
        missing = [n for n in self._set_names if n not in model.output_names and n not in _output_keys(model)]
        if missing:
            raise ValueError(f"model {self._model_uri} has no output heads {missing}")
        return model

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None) -> Iterable[PredictionResult]:
        x = np.stack(batch).astype(np.float32)
        outputs = model(x, training=False)
        if not isinstance(outputs, dict):
            raise ValueError(f"model {self._model_uri} returned {type(outputs).__name__}, expected a dict of heads")
        heads = {name: np.asarray(outputs[name]) for name in self._set_names}
        # The example itself is not kept (an image or embedding per photo would double the shuffle volume),
        # except embeddings when the model has a refinement index, whose search needs them.
        return [
            PredictionResult(batch[i] if self._keep_inputs else None,
                             {name: heads[name][i] for name in self._set_names}, self._model_id)
            for i in range(len(batch))
        ]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(b).nbytes for b in batch))

    def get_metrics_namespace(self) -> str:
        return "BatchPredictInference"


def _output_keys(model) -> list[str]:
    out = getattr(model, "output", None)
    return list(out) if isinstance(out, dict) else []


# ------------------------------------------------------------------------------------------------- inputs


class _ValidateForPredictionFn(beam.DoFn):
    def __init__(self, kind: str, embedding_dim: int):
        self._kind, self._dim = kind, embedding_dim

    def process(self, batch: pa.RecordBatch):
        need_embedding = self._kind == FEATURES
        problems = row_problems(batch, self._dim if need_embedding else None, need_embedding, need_location=False)
        if self._kind == IMAGES:
            uris = batch.column(c.IMAGE_URI)
            empty = pc.fill_null(pc.equal(uris, ""), True).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(empty):
                problems.setdefault(int(i), (Reason.MISSING_FILE, "image_uri is empty"))
        keep = np.ones(batch.num_rows, dtype=bool)
        for i, (reason, detail) in problems.items():
            keep[i] = False
            yield beam.pvalue.TaggedOutput(DEAD, dead_letter(JOB, reason, detail, batch_row(batch, i)))
        if keep.any():
            yield batch.filter(pa.array(keep))


def keyed_embeddings(batch: pa.RecordBatch) -> Iterable[tuple[str, np.ndarray]]:
    """(photo_id, float32 embedding) per row of a validated batch (every embedding has the model's length)."""
    ids = batch.column(c.PHOTO_ID).to_pylist()
    column = batch.column(c.EMBEDDING)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = values.reshape(len(ids), -1) if len(ids) else values.reshape(0, 0)
    return list(zip(ids, matrix))


def keyed_image_uris(batch: pa.RecordBatch) -> Iterable[tuple[str, str]]:
    return list(zip(batch.column(c.PHOTO_ID).to_pylist(), batch.column(c.IMAGE_URI).to_pylist()))


def _split_keyed_uri(element):
    """(photo_id, uri) -> (key, uri, the record a dead letter shows)."""
    photo_id, uri = element
    return photo_id, uri, {c.PHOTO_ID: photo_id, c.IMAGE_URI: uri}


class ReadPhotosToPredict(beam.PTransform):
    """Manifest batches -> outputs ``valid`` (photo_id, model input) and ``dead_letters``."""

    def __init__(self, kind: str, embedding_dim: int):
        super().__init__()
        self._kind, self._dim = kind, embedding_dim

    def expand(self, batches):
        checked = batches | "Check photo ids and inputs" >> beam.ParDo(
            _ValidateForPredictionFn(self._kind, self._dim)
        ).with_outputs(DEAD, main=VALID)
        unique = checked[VALID] | "Drop repeated photo ids" >> DropDuplicatePhotoIds(JOB)
        dead = [checked[DEAD], unique[DEAD]]
        if self._kind == FEATURES:
            inputs = unique[VALID] | "Key embeddings by photo id" >> beam.FlatMap(keyed_embeddings)
        else:
            decoded = (
                unique[VALID]
                | "Key image files by photo id" >> beam.FlatMap(keyed_image_uris)
                | "Spread images over workers" >> beam.Reshuffle()
                # imagery.load_image, the one preprocessing of extract_features, locate and this job, on a thread
                # pool running ahead of the model fused after it (see pipelines.image_input).
                | "Decode and resize the images"
                >> beam.ParDo(DecodeImagesFn(JOB, _split_keyed_uri, IMAGE_SIZE, name_uri=True)).with_outputs(
                    DEAD, main=VALID
                )
            )
            inputs = decoded[VALID]
            dead.append(decoded[DEAD])
        return {VALID: inputs, DEAD: dead | "Gather input dead letters" >> beam.Flatten()}


# ------------------------------------------------------------------------------------------------- predict


def _failed_batch_to_dead_letters(failed) -> Iterable[dict]:
    batch, error = failed
    detail = f"{type(error).__name__}: {str(error)[:300]}"
    for item in batch:
        key = item[0] if isinstance(item, tuple) else None
        yield dead_letter(JOB, Reason.INFERENCE_ERROR, detail, {c.PHOTO_ID: key})


class RunHeads(beam.PTransform):
    """(photo_id, input) -> outputs ``valid`` (photo_id, PredictionResult of every head) and ``dead_letters``."""

    def __init__(self, handler: ModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, keyed_inputs):
        main, failed = keyed_inputs | "Run the model heads" >> RunInference(
            KeyedModelHandler(self._handler)
        ).with_exception_handling()
        dead = failed.failed_inferences | "Dead-letter failed batches" >> beam.FlatMap(_failed_batch_to_dead_letters)
        return {VALID: main, DEAD: dead}


def resolve_methods(spec: str | Sequence[str] | None, set_names: Sequence[str]):
    """``None``/"default" -> NormalizedSum over all sets; "paper" -> Table 2 rows; else names split by ';'."""
    if spec is None or spec == "default" or spec == ["default"]:
        return [default_method(set_names)]
    if spec == "paper" or spec == ["paper"]:
        return standard_methods(set_names)
    names = spec.split(";") if isinstance(spec, str) else [n for s in spec for n in s.split(";")]
    methods = [parse_method(n, set_names) for n in names if n.strip()]
    if len({m.name for m in methods}) != len(methods):
        raise ValueError(f"--methods names a method twice: {[m.name for m in methods]}")
    return methods


class _CombineFn(beam.DoFn):
    """A batch of (photo_id, head probabilities) -> one predictions row per photo and method."""

    def __init__(self, partitions_dir: str, methods: str | Sequence[str] | None, top_k: int, run_date: str,
                 partitions: Partitions | None = None, model_dir: str | None = None):
        self._dir, self._spec, self._top_k, self._run_date = partitions_dir, methods, top_k, run_date
        self._partitions = partitions
        self._model_dir = model_dir
        self._rows_out = Metrics.counter(JOB, ROWS_OUT)

    def setup(self):
        parts = self._partitions if self._partitions is not None else load_partitions(self._dir)
        self._set_names = parts.set_names
        self._methods = resolve_methods(self._spec, parts.set_names)
        self._extras = refine.AccuracyExtras.load(self._model_dir, parts) if self._model_dir else None
        top_k = self._extras.top_k(self._top_k) if self._extras else self._top_k
        self._combiners = {m.name: m.combiner(parts, top_k) for m in self._methods}
        self._gazetteer = gazetteer()  # built once per worker (~2 s), then vectorised lookups per batch

    def process(self, batch):
        ids = [photo_id for photo_id, _ in batch]
        model_ids = [result.model_id for _, result in batch]
        probs = {n: np.stack([np.asarray(r.inference[n], dtype=np.float64) for _, r in batch]) for n in self._set_names}
        ok = np.ones(len(ids), dtype=bool)
        for name, p in probs.items():
            bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)
            for i in np.flatnonzero(bad & ok):
                detail = f"head '{name}' returned NaN, inf or negative probabilities"
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(JOB, Reason.INFERENCE_ERROR, detail, {c.PHOTO_ID: ids[i]}))
            ok &= ~bad
        if not ok.any():
            return
        kept = np.flatnonzero(ok)
        probs = {n: p[kept] for n, p in probs.items()}
        self._rows_out.inc(int(kept.size))
        yield beam.pvalue.TaggedOutput(PREDICTED, (ROWS_OUT, int(kept.size)))
        embeddings = None
        if self._extras is not None and all(r.example is not None for _, r in batch):
            embeddings = np.stack([np.asarray(batch[i][1].example, dtype=np.float32) for i in kept])
        for method in self._methods:
            combiner = self._combiners[method.name]
            pred = combiner.predict(probs)
            partitions_id = combiner.partitions.partitions_id
            variants = [(method.name, pred.lat, pred.lng, (None, None))]
            if self._extras is not None:
                variants = self._extras.variants(method.name, combiner, pred, probs, embeddings)
            for name, lat, lng, (radius50, radius90) in variants:
                places = self._gazetteer.nearest(lat, lng)
                place_names = places.names()
                for j, i in enumerate(kept):
                    valid = pred.topk_ids[j, : self._top_k] >= 0
                    yield {
                        c.PHOTO_ID: ids[i],
                        c.METHOD: name,
                        c.LAT: float(lat[j]),
                        c.LNG: float(lng[j]),
                        c.SCORE: float(pred.score[j]),
                        c.TOPK_PARTITION_IDS: pred.topk_ids[j, : self._top_k][valid].tolist(),
                        c.TOPK_SCORES: pred.topk_scores[j, : self._top_k][valid].tolist(),
                        c.TOPK_LAT: pred.topk_lat[j, : self._top_k][valid].tolist(),
                        c.TOPK_LNG: pred.topk_lng[j, : self._top_k][valid].tolist(),
                        c.MODEL_ID: model_ids[i],
                        c.PARTITIONS_ID: partitions_id,
                        c.RUN_DATE: self._run_date,
                        c.RADIUS50_KM: None if radius50 is None else float(radius50[j]),
                        c.RADIUS90_KM: None if radius90 is None else float(radius90[j]),
                        c.COUNTRY_CODE: places.country_code[j],
                        c.ADMIN1: places.admin1[j],
                        c.PLACE_NAME: place_names[j],
                    }


class CombineHeads(beam.PTransform):
    """(photo_id, PredictionResult) -> outputs ``valid`` (``schemas.PREDICTIONS`` dicts) and ``dead_letters``.

    ``partitions`` (an in-memory object) is for tests; jobs pass the artifact path so workers load it.
    """

    def __init__(self, partitions_dir: str | None, methods=None, top_k: int = 5, run_date: str = "",
                 batch_size: int = 512, partitions: Partitions | None = None, model_dir: str | None = None):
        super().__init__()
        self._fn = _CombineFn(partitions_dir, methods, top_k, run_date, partitions, model_dir)
        self._batch_size = batch_size

    def expand(self, results):
        return (
            results
            | "Batch photos for the combiner" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "Combine the heads over partitions" >> beam.ParDo(self._fn).with_outputs(DEAD, PREDICTED, main=VALID)
        )


# ------------------------------------------------------------------------------------------------- accuracy extras
# Refinement rows ("<method>+R") and confidence radii, when the model directory has refine/ (written by
# pipelines.build_refine_index). Kept apart from the combiner above: without refine/ nothing here runs.


def has_accuracy_extras(model_dir: str) -> bool:
    from partition_gen import refine

    return FileSystems.exists(FileSystems.join(refine.index_dir(model_dir), "_SUCCESS"))


# ------------------------------------------------------------------------------------------------- job


def input_kind(manifest: str) -> str:
    names = table_schema(manifest).names
    if c.PHOTO_ID not in names:
        raise ValueError(f"manifest {manifest}: missing column '{c.PHOTO_ID}' (has: {', '.join(names)})")
    if c.EMBEDDING in names:
        return FEATURES
    if c.IMAGE_URI in names:
        return IMAGES
    raise ValueError(f"manifest {manifest}: needs an '{c.EMBEDDING}' or an '{c.IMAGE_URI}' column")


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    manifest: str,
    model_dir: str,
    partitions_dir: str,
    output_dir: str,
    run_date: str,
    dead_letters_dir: str | None = None,
    methods=None,
    top_k: int = 5,
    kind: str | None = None,
) -> None:
    """Wire the job into ``pipeline``, writing into ``output_dir`` (the staging directory of a run)."""
    model = read_model_manifest(model_dir)
    kind = kind or input_kind(manifest)
    model_file = FileSystems.join(model_dir, FEATURES_MODEL if kind == FEATURES else GEOLOCATOR_MODEL)
    # Only the columns this kind needs: the CSV reader refuses to select a column the file does not have.
    input_column = c.EMBEDDING if kind == FEATURES else c.IMAGE_URI
    # Refinement searches by the photo's features, so they travel with the heads' output when there is an index.
    keep = kind == FEATURES and has_accuracy_extras(model_dir)
    batch = {"min_batch_size": IMAGE_BATCH, "max_batch_size": IMAGE_BATCH} if kind == IMAGES else {}
    handler = KerasDictModelHandler(model_file, model["set_names"], model["model_id"], keep_inputs=keep, **batch)
    photos = (
        pipeline
        | "Read the manifest" >> ReadTableBatches(manifest, JOB, columns=[c.PHOTO_ID, input_column])
        | "Prepare model inputs" >> ReadPhotosToPredict(kind, int(model["embedding_dim"]))
    )
    heads = photos[VALID] | "Predict class probabilities" >> RunHeads(handler)
    predictions = heads[VALID] | "Combine into locations" >> CombineHeads(
        partitions_dir, methods, top_k, run_date, model_dir=model_dir
    )
    book = ledger(pipeline)
    book.tally_by(predictions[PREDICTED], _pass, "Tally the photos predicted")
    book.written(
        predictions[VALID]
        | "Write predictions"
        >> beam.io.WriteToParquet(
            FileSystems.join(output_dir, PREDICTIONS_PREFIX), schema=PREDICTIONS, file_name_suffix=".parquet"
        )
    )
    (
        (photos[DEAD], heads[DEAD], predictions[DEAD])
        | "Write dead letters"
        >> WriteDeadLetters(dead_letters_dir or f"{output_dir.rstrip('/')}.dead_letters", JOB)
    )


def _pass(tally):
    return tally


def run_output_dir(output: str, run_date: str) -> str:
    """``OUTPUT/run_date=D``: one date's predictions (only predictions: readers of OUTPUT see one schema)."""
    return FileSystems.join(absolute(output), f"{c.RUN_DATE}={run_date}")


def run_dead_letters_dir(output: str, run_date: str, dead_letters: str | None = None) -> str:
    """``OUTPUT.dead_letters/run_date=D`` (or ``--dead_letters``/run_date=D): the sibling tree of dead letters."""
    base = absolute(dead_letters) if dead_letters else f"{absolute(output).rstrip('/')}.dead_letters"
    return FileSystems.join(base, f"{c.RUN_DATE}={run_date}")


def _check_run_date(text: str) -> str:
    if not _DATE.match(text):
        raise argparse.ArgumentTypeError(f"must be YYYY-MM-DD, got '{text}'")
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a calendar date") from None
    return text


def check_embedding_size(manifest: str, model_dir: str, embedding_dim: int, kind: str | None = None) -> None:
    """Refuse, at launch, a features manifest whose embeddings have another size than the model takes (every
    row would otherwise become a dead letter)."""
    if (kind or input_kind(manifest)) != FEATURES:
        return
    from pipelines.bucket_cells import infer_embedding_dim
    from schemas import SchemaError

    try:
        found = infer_embedding_dim(manifest)
    except SchemaError:
        return  # no embedding at all (e.g. an empty night): the job's own accounting decides
    if found != embedding_dim:
        raise SchemaError(
            f"--manifest {manifest}: embeddings have {found} values but model {model_dir} takes {embedding_dim}; "
            "extract the features with the model's backbone"
        )


def parser() -> argparse.ArgumentParser:
    """The job's flags, declared once: ``run`` parses argv with it, ``run_all`` fills it through ``job_args``, and
    ``templates/batch_predict_metadata.json`` is held equal to it by tests/test_templates.py."""
    p = Parser(prog="pipelines.batch_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True, type=path_flag,
                   help="photos to geolocate: CSV/Parquet file, glob or directory")
    p.add_argument("--model", required=True, type=path_flag, help="trainer export: manifest.json + *.keras")
    p.add_argument("--partitions", required=True, type=path_flag,
                   help="partitions artifact of the model's geoclass sets")
    p.add_argument("--output", required=True, type=path_flag,
                   help="predictions base folder; the run writes OUTPUT/run_date=YYYY-MM-DD/")
    p.add_argument("--dead_letters", default=None, type=path_flag,
                   help="dead-letter base folder (default OUTPUT.dead_letters); the run writes DEAD_LETTERS/run_date=.../")
    p.add_argument("--run_date", type=_check_run_date,
                   default=datetime.datetime.now(datetime.UTC).date().isoformat(),
                   help="YYYY-MM-DD, the date folder of this run (default: today, UTC)")
    p.add_argument("--methods", default="default",
                   help="'default' (NormalizedSum over every set), 'paper' or method names separated by ';'")
    p.add_argument("--top_k", type=int, default=5, help="partitions kept per photo and method (default 5)")
    p.add_argument("--input_kind", choices=[FEATURES, IMAGES], default=None,
                   help="features or images (default: from the manifest's columns)")
    p.add_argument("--allow_random_backbone", action="store_true",
                   help="predict with a model whose backbone has random weights (tests only; warns every run)")
    return add_job_flags(p)


def launch(args: argparse.Namespace, options):
    """Build and run the job from typed arguments (``parser()``'s flags) and ``PipelineOptions``."""
    run_date = args.run_date
    # Refuse mismatched artifacts here, at launch, with both sides named, before any worker starts.
    model = read_model_manifest(args.model)
    from trainer.export import check_backbone

    warning = check_backbone(model, args.model, args.allow_random_backbone)  # raises RandomBackboneError
    if warning:
        LOG.warning(warning.removeprefix("WARNING: "))  # the log line says WARNING already
    parts = load_partitions(args.partitions)
    check_model_matches(parts, model, args.model)
    resolve_methods(args.methods, parts.set_names)
    check_embedding_size(args.manifest, args.model, int(model["embedding_dim"]), args.input_kind)

    # The predictions' staging folder is hidden (leading "_"), so readers of OUTPUT never see a run in progress.
    output = StagedOutput(run_output_dir(args.output, run_date), hidden=True)
    dead_letters = StagedOutput(run_dead_letters_dir(args.output, run_date, args.dead_letters), hidden=True)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        manifest=args.manifest,
        model_dir=args.model,
        partitions_dir=args.partitions,
        output_dir=output.path,
        dead_letters_dir=dead_letters.path,
        run_date=run_date,
        methods=args.methods,
        top_k=args.top_k,
        kind=args.input_kind,
    )
    summary = run_job(pipeline, JOB, [output, dead_letters], args=args)
    LOG.info("predictions of %s: %s (dead letters: %s)", run_date, output.final, dead_letters.final)
    return summary


def run(argv: Sequence[str] | None = None):
    args, options = parse_job_args(parser(), argv)
    return launch(args, options)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.batch_predict")
