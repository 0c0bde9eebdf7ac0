"""The whole CPlaNet chain on user data, in one command, with defaults scaled to the data.

    python -m pipelines.run_all --train TRAIN.parquet --test TEST.parquet --workdir DIR [--config FILE]

TRAIN and TEST are Parquet files (or globs/directories) with ``photo_id`` (string), ``lat``, ``lng`` (double)
and ``embedding`` (list of float), e.g. features written by ``pipelines.extract_features``; or image manifests
(``photo_id, lat, lng, image_uri``, what ``pipelines.ingest_photos`` writes in ``OUT/manifest``, CSV or
Parquet). From image manifests the backbone (``--backbone inception_v3|PATH.keras``, ``--backbone_weights
FILE|imagenet|random``; a weights choice is required for Inception v3) is built once into ``DIR/backbone/``
and ``pipelines.extract_features`` runs first (``DIR/features/train``, ``DIR/features/test``); the exported
model's geolocator holds that very backbone and its manifest records it. So photos -> locations is
``ingest_photos`` + ``run_all`` + ``locate``. With ``random`` weights (tests only) the predictions stage is
told ``--allow_random_backbone`` and says so. The stages, each writing one artifact under DIR
(docs/ARTIFACTS.md), so any stage can be rerun alone:

1. ``bucket/``      ``pipelines.bucket_cells``: level-14 S2 cell per photo, per-cell sums (Beam)
2. ``sets/``        ``pipelines.generate_geoclass_sets``: sets 1-2 (fixed), further sampled sets, PlaNet (Beam)
3. ``examples/``    ``pipelines.make_examples``: TFRecord shards, a label per set (Beam)
4. ``train/``, ``model/``  ``trainer.train``: one softmax head per set on the frozen features, exported
5. ``partitions/``  ``partition_gen.partitions``: every non-empty intersection of the sets
6. ``model/refine/`` ``pipelines.build_refine_index``: the refinement index (PQ codes of the train split) and
   the confidence radii, both chosen on the eval split (``refine: false`` skips it)
7. ``predictions/`` ``pipelines.batch_predict``: the paper's methods on TEST (Beam, RunInference), with
   "CPlaNet[...]+R" rows and radius50_km/radius90_km when step 6 ran
8. ``evaluation.json`` (+ ``.md``, ``accuracy.png``) ``pipelines.evaluate``: accuracy at 1 … 2500 km, the share
   of photos within their radii, and the epoch each head was exported from (``training``)

Defaults scale with the data (see ``scaled_defaults``); every one is overridable in ``--config FILE`` (JSON
or YAML, keys of :class:`RunConfig`). ``--resume`` skips stages whose artifact is already complete.
Extra arguments (``--runner``, ``--project`` …) go to every Beam job, so the same command submits the Beam
stages to Dataflow or Flink (docs/RUNNERS.md); the local stages (geoclass merging when run without Beam,
training, partitions, evaluation) run where the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence

import pyarrow.parquet as pq

from schemas import artifacts
from schemas import columns as c
from schemas import io as artifact_io
from schemas.cli import Parser, UsageError, nearest_flag

LOG = logging.getLogger("cplanet.run_all")
BACKBONE_FILE = "backbone.keras"
BACKBONE_RECORD_FILE = "backbone.json"
# Below this the PQ codebooks (256 centroids per sub-vector) and the eval-split calibration have too little data.
MIN_REFINE_PHOTOS = 2000


@dataclasses.dataclass
class RunConfig:
    """Every choice of a run. ``None`` means: scaled to the data by ``scaled_defaults``."""

    seed: int = 0
    level: int = 14
    # Sets 1 and 2 are the paper's fixed sets; this many more are sampled from the seed (Table 1: 3).
    n_sampled_sets: int = 3
    # Geoclasses of sets 1 and 2; sampled sets draw from [1, 1.3] x this, as Table 1 does around 10k.
    classes_per_set: int | None = None
    # The paper has ~3,000 training images per geoclass (30M / 10k); a sample needs finer classes to
    # say anything at 1-25 km, so the scaled default aims at this many images per class.
    images_per_class: int = 50
    planet: bool = True
    planet_t_max: int | None = None
    planet_t_min: int | None = None
    eval_fraction: float = 0.1
    # The most epochs to train; early stopping on the eval split (patience epochs without a better eval top-1
    # in any head) ends training sooner, and each head is exported at its best epoch.
    epochs: int | None = None
    early_stopping_patience: int | None = 2
    # An eval top-1 gain below this is no improvement: the standard error of top-1 on an eval split of 10k
    # photos is about 0.005, and gains of 0.001 on a plateau kept 100k-photo runs going for many epochs.
    early_stopping_min_delta: float = 0.002
    # Haversine label smoothing tau (km); None: one-hot labels (see bench/REPORT.md for the ablation).
    label_smoothing_km: float | None = None
    # Refinement index + confidence radii (stage 6); bytes of PQ code per training photo.
    refine: bool = True
    code_bytes: int = 32
    # A model directory whose refinement index encodes this run's training photos over its partitions (a run
    # that differs only in training): its codes are reused instead of trained and encoded again.
    refine_index_from: str | None = None
    batch_size: int = 256
    learning_rate: float = 0.005
    top_k: int = 5
    methods: str = "paper"
    # The test photo drawn as the paper's Figure 4 (sets added one by one); None: the first test photo.
    figure_photo_id: str | None = None

    @classmethod
    def from_file(cls, path: str | None) -> RunConfig:
        if not path:
            return cls()
        if not artifacts.exists(path):
            raise UsageError(f"--config {path}: no such file")
        text = artifacts.read_bytes(path).decode("utf-8")
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            try:
                values = json.loads(text)
            except ValueError as error:
                raise UsageError(f"--config {path}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise UsageError(f"--config {path}: expected a mapping of config keys, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            hints = "".join(nearest_flag(k, sorted(known)).replace("; did you mean", f" ({k}: did you mean")
                            .replace("?", "?)") for k in unknown)
            raise UsageError(f"--config {path}: unknown config keys {unknown}{hints}; known keys: {sorted(known)}")
        return cls(**values)


def scaled_defaults(config: RunConfig, n_train: int) -> RunConfig:
    """Fill the ``None`` fields from the number of training photos."""
    classes = config.classes_per_set or int(min(10_000, max(8, round(n_train / config.images_per_class))))
    # PlaNet splits a cell above t_max images, so its cells hold t_max/4..t_max: about the same number of
    # classes as the merged sets when t_max is twice their mean class size.
    t_max = config.planet_t_max or max(4, 2 * n_train // classes)
    t_min = config.planet_t_min or max(1, t_max // 20)
    # A budget of about 2M example visits, between 8 and 40 passes; early stopping on the eval split decides
    # where training actually ends (the heads' held-out accuracy levels off within a few hundred thousand).
    epochs = config.epochs or int(min(40, max(8, round(2_000_000 / max(n_train, 1)))))
    return dataclasses.replace(config, classes_per_set=classes, planet_t_max=t_max, planet_t_min=t_min, epochs=epochs)


def count_rows(path: str) -> int:
    total = 0
    for f in artifact_io.list_table_files(path, allow_empty=True):
        with artifacts.open_read(f) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def embedding_dim(path: str) -> int:
    first = artifact_io.list_table_files(path)[0]
    with artifacts.open_read(first) as handle:
        column = pq.ParquetFile(handle).read_row_group(0, columns=[c.EMBEDDING]).column(c.EMBEDDING)
    return len(column[0].as_py())


class Stages:
    """Runs named stages in order with timing and a one-line progress report each."""

    def __init__(self, workdir: str, resume: bool, total: int):
        self.workdir, self.resume, self.total, self.done = workdir, resume, total, 0
        self.seconds: dict[str, float] = {}

    def run(self, name: str, artifact: str | None, step: Callable[[], object]) -> None:
        self.done += 1
        marker = artifact and artifacts.exists(artifacts.join(artifact, artifact_io.SUCCESS_MARKER))
        if self.resume and marker:
            LOG.info("[%d/%d] %s: complete at %s, skipped (--resume)", self.done, self.total, name, artifact)
            return
        LOG.info("[%d/%d] %s ...", self.done, self.total, name)
        started = time.time()
        step()
        self.seconds[name] = round(time.time() - started, 1)
        LOG.info("[%d/%d] %s done in %.1f s", self.done, self.total, name, self.seconds[name])


def is_image_manifest(path: str) -> bool:
    """An image manifest (``image_uri``, no ``embedding``) rather than features."""
    from pipelines.common import table_schema

    names = table_schema(path).names
    return c.IMAGE_URI in names and c.EMBEDDING not in names


def build_backbone_artifact(directory: str, backbone: str, weights: str | None) -> None:
    """``backbone.keras`` (the model extract_features and the geolocator both use) and ``backbone.json``.

    Built once, so the features the heads train on and the exported geolocator come from the same weights
    even when they are ``random``.
    """
    from trainer.backbone import load_backbone

    model, info = load_backbone(backbone, weights)
    staging = artifact_io.staging_path(directory)
    model.save(os.path.join(staging, BACKBONE_FILE))
    with open(os.path.join(staging, BACKBONE_RECORD_FILE), "w") as f:
        json.dump(info, f, indent=2)
    artifact_io.replace_directory_atomic(staging, directory)


def run_chain(train: str, test: str, workdir: str, config: RunConfig, beam_args: Sequence[str] = (),
              resume: bool = False, backbone: str = "inception_v3", backbone_weights: str | None = None) -> dict:
    """Run every stage; returns the evaluation report (also written to ``workdir/evaluation.json``)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from partition_gen import partitions as partitions_lib
    from pipelines import (
        batch_predict,
        bucket_cells,
        evaluate,
        extract_features,
        generate_geoclass_sets,
        make_examples,
    )
    from pipelines.options import job_args, offline_pipeline_args
    from trainer import export as trainer_export
    from trainer import hparams
    from trainer import train as trainer_train

    workdir, train, test = artifacts.absolute(workdir), artifacts.absolute(train), artifacts.absolute(test)
    if not artifacts.is_remote(workdir):
        os.makedirs(workdir, exist_ok=True)
    # Every Beam stage gets the same PipelineOptions (runner flags given to run_all) and typed job arguments.
    options = PipelineOptions(offline_pipeline_args(list(beam_args)))
    images = {name: is_image_manifest(path) for name, path in (("train", train), ("test", test))}
    backbone_dir = artifacts.join(workdir, "backbone")
    extraction = Stages(workdir, resume, total=sum(images.values()) + 1) if any(images.values()) else None
    if extraction is not None:
        if backbone == "inception_v3" and backbone_weights is None:
            raise UsageError(
                "run_all: --train/--test are image manifests, so features are extracted first: choose the backbone's "
                "weights with --backbone_weights FILE|imagenet|random (see README: Inception v3 weights offline)"
            )
        if images["test"]:
            from pipelines.common import table_schema

            if not {c.LAT, c.LNG} <= set(table_schema(test).names):
                raise UsageError(f"run_all: --test {test} has no {c.LAT}/{c.LNG}: the evaluation needs true locations")
        with local_mirror(backbone_dir, write_back=True) as local_backbone:
            extraction.run("build the backbone", backbone_dir,
                           lambda: build_backbone_artifact(local_backbone, backbone, backbone_weights))
        for name in ("train", "test"):
            if images[name]:
                features = artifacts.join(workdir, "features", name)
                source = train if name == "train" else test
                extraction.run(f"extract {name} features", features, lambda s=source, f=features: extract_features.launch(
                    job_args(extract_features.parser(), manifest=s, output=f,
                             backbone=artifacts.join(backbone_dir, BACKBONE_FILE)), options))
                if name == "train":
                    train = features
                else:
                    test = features
    n_train = count_rows(train)
    if n_train == 0:
        from schemas import SchemaError

        raise SchemaError(f"--train {train}: no rows; give a table of training photos with embeddings")
    config = scaled_defaults(config, n_train)
    record = {"train": train, "test": test, "n_train_rows": n_train, "backbone": backbone,
              "backbone_weights": backbone_weights, **dataclasses.asdict(config)}
    record_path = artifacts.join(workdir, "run_config.json")
    if artifacts.exists(record_path):
        previous = artifacts.read_json(record_path)
        # Only the stages after training read TEST and the figure choice; everything else shapes artifacts
        # that --resume would keep, so a change there must start afresh rather than mix two runs.
        # Training length settings are resumable in the trainer itself (it continues or stops where it is).
        resumable = ("test", "figure_photo_id", "methods", "top_k", "refine", "refine_index_from", "epochs",
                     "early_stopping_patience", "early_stopping_min_delta")
        changed = sorted(k for k in record if k not in resumable
                         and previous.get(k) != record[k])
        if changed and resume:
            differences = ", ".join(f"{k}: {previous.get(k)!r} -> {record[k]!r}" for k in changed)
            raise UsageError(
                f"--resume: {workdir} was built with other settings ({differences}); "
                "use a new --workdir, or drop --resume to rebuild everything there"
            )
    artifacts.write_json(record_path, record)
    LOG.info("run config (scaled to %d training rows): %s", n_train, dataclasses.asdict(config))

    path = {name: artifacts.join(workdir, name) for name in
            ("bucket", "sets", "examples", "train", "model", "partitions", "predictions")}
    stages = Stages(workdir, resume, total=8)
    cells, photos = artifacts.join(path["bucket"], "cells"), artifacts.join(path["bucket"], "photos")

    stages.run("bucket photos into S2 cells", cells, lambda: bucket_cells.launch(
        job_args(bucket_cells.parser(), features=train, output=path["bucket"], level=config.level), options))

    planet = f"{config.planet_t_min},{config.planet_t_max}" if config.planet else None
    stages.run("generate geoclass sets", path["sets"], lambda: generate_geoclass_sets.launch(
        job_args(generate_geoclass_sets.parser(), cells=cells, output=path["sets"],
                 n_classes=config.classes_per_set, n_sampled=config.n_sampled_sets, seed=config.seed,
                 planet=planet), options))

    stages.run("make training examples", path["examples"], lambda: make_examples.launch(
        job_args(make_examples.parser(), photos=photos, geoclass_sets=path["sets"], output=path["examples"],
                 eval_fraction=config.eval_fraction), options))

    def train_and_export():
        params = hparams.HParams(epochs=config.epochs, batch_size=config.batch_size,
                                 learning_rate=config.learning_rate, seed=config.seed, verbose=0,
                                 early_stopping_patience=config.early_stopping_patience or None,
                                 early_stopping_min_delta=config.early_stopping_min_delta,
                                 label_smoothing_km=config.label_smoothing_km or None)
        if not resume:
            artifacts.delete_tree(path["train"])  # a fresh run trains afresh (--resume continues checkpoints)
        # The trainer reads and writes local files; a gs:// workdir is mirrored through Beam's FileSystems
        # (TensorFlow's own gs:// client ignores STORAGE_EMULATOR_HOST and custom endpoints).
        with local_mirror(path["examples"]) as examples, local_mirror(path["sets"]) as sets, \
                local_mirror(path["train"], write_back=True) as job_dir:
            result = trainer_train.train(examples, sets, job_dir, params)
        # Each head at its best eval epoch when training kept one (early stopping), else the last epoch.
        heads = result.best_model if result.best_model is not None else result.model
        export = {"with_geolocator": False}
        if extraction is not None:
            # The very backbone the features came from, recorded as what it is (e.g. inception_v3, random).
            with local_mirror(backbone_dir) as local_backbone:
                with open(os.path.join(local_backbone, BACKBONE_RECORD_FILE)) as handle:
                    backbone_info = json.load(handle)
                # The saved .keras carries its weights; the record says what they are (checked by checksum).
                export = {"with_geolocator": True, "backbone": os.path.join(local_backbone, BACKBONE_FILE),
                          "backbone_record": backbone_info}
                trainer_export.export_model(heads, path["model"], sets_binding,
                                            trained_checksum=result.binding.checksum, **export)
            return
        if backbone_weights is not None or backbone != "inception_v3":
            # Embeddings given with a named backbone: the user says they came from it.
            export = {"with_geolocator": True, "backbone": backbone, "backbone_weights": backbone_weights}
        else:
            # Embeddings of unrecorded origin: a geolocator on a guessed (random) backbone would be a lie.
            LOG.info("no --backbone_weights: exporting the features model only (no image geolocator)")
        trainer_export.export_model(heads, path["model"], sets_binding,
                                    trained_checksum=result.binding.checksum, **export)

    sets_binding = artifacts.read_sets_json(path["sets"])
    stages.run("train the heads and export the model", path["model"], train_and_export)

    def build_partitions():
        parts = partitions_lib.build_partitions_from_artifact(path["sets"])
        partitions_lib.save_partitions(parts, path["partitions"])
        LOG.info("%d combinatorial partitions over %d nodes", parts.n_partitions, parts.total_nodes)

    stages.run("build combinatorial partitions", path["partitions"], build_partitions)

    def build_refinement():
        from pipelines import build_refine_index

        summary = build_refine_index.build(path["examples"], path["model"], path["partitions"],
                                           config.code_bytes, config.seed, index_from=config.refine_index_from)
        artifacts.write_json(artifacts.join(workdir, "refine_summary.json"), summary)

    if config.refine and n_train < MIN_REFINE_PHOTOS:
        LOG.info("refinement index skipped: %d training photos, it needs %d", n_train, MIN_REFINE_PHOTOS)
        stages.run("refinement index (too few photos)", None, lambda: None)
    elif config.refine:
        from partition_gen.refine import index_dir

        stages.run("build the refinement index and calibrate confidence radii", index_dir(path["model"]),
                   build_refinement)
    else:
        stages.run("refinement index (off in the config)", None, lambda: None)

    run_date = "1970-01-01"  # evaluation runs are not nightly runs; a fixed date makes reruns replace them
    # Random weights were asked for by name (tests): the predictions may use them, and say so.
    random_flag = ["--allow_random_backbone"] if backbone_weights == "random" else []
    predictions = batch_predict.run_output_dir(path["predictions"], run_date)
    stages.run("predict the test photos", predictions, lambda: batch_predict.launch(
        job_args(batch_predict.parser(), manifest=test, model=path["model"], partitions=path["partitions"],
                 output=path["predictions"], run_date=run_date, methods=config.methods, top_k=config.top_k,
                 allow_random_backbone=bool(random_flag)),
        options))

    report: dict = {}

    def run_evaluation():
        report.update(evaluate.evaluate_to(predictions, test, workdir))
        # The epoch each head was exported from, so the training budget is a reported fact, not a guess.
        report["training"] = training_summary_of(path["train"])
        LOG.info("heads exported at their best eval epochs %s (%d epochs run%s)", report["training"]["best_epoch"],
                 report["training"]["epochs_run"], ", stopped early" if report["training"]["stopped_early"] else "")
        artifacts.write_json(artifacts.join(workdir, "evaluation.json"), report)

    stages.run("evaluate", None, run_evaluation)
    figure = draw_progressive_map(workdir, test, path["model"], path["sets"], path["partitions"],
                                  config.figure_photo_id)
    LOG.info("Figure 4 (sets added one by one) for one test photo: %s", figure)
    artifacts.write_json(artifacts.join(workdir, "stage_seconds.json"), stages.seconds)
    return report


def training_summary_of(job_dir: str) -> dict:
    """``trainer.job_dir.training_summary`` of a local or gs:// job dir (it reads only the state file)."""
    from trainer.job_dir import STATE_FILE, training_summary

    if not artifacts.is_remote(job_dir):
        return training_summary(job_dir)
    with tempfile.TemporaryDirectory() as local:
        artifacts.copy_file(artifacts.join(job_dir, STATE_FILE), os.path.join(local, STATE_FILE))
        return training_summary(local)


@contextlib.contextmanager
def local_mirror(directory: str, write_back: bool = False):
    """``directory`` itself when local; for gs:// a temporary local copy (copied back if ``write_back``)."""
    if not artifacts.is_remote(directory):
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="cplanet-mirror-") as local:
        for path in artifacts.list_files(directory):
            artifacts.copy_file(path, os.path.join(local, artifacts.relative(path, directory)))
        yield local
        if write_back:
            artifacts.delete_tree(directory)
            for path in artifacts.list_files(local):
                artifacts.copy_file(path, artifacts.join(directory, artifacts.relative(path, local)))


def draw_progressive_map(workdir: str, test: str, model_dir: str, sets_dir: str, partitions_dir: str,
                         photo_id: str | None = None) -> str:
    """The paper's Figure 4 for one test photo: the top region as the sets are added one by one."""
    import numpy as np

    from partition_gen.figures import figure_file_name, plot_progressive_map
    from partition_gen.partitions import load_partitions
    from trainer.export import load_features_model

    table = artifact_io.read_table(test, columns=[c.PHOTO_ID, c.LAT, c.LNG, c.EMBEDDING])
    ids = table.column(c.PHOTO_ID).to_pylist()
    if photo_id is None:
        row = 0
    elif photo_id in ids:
        row = ids.index(photo_id)
    else:
        raise UsageError(f"config figure_photo_id: '{photo_id}' is not in {test}; pick a photo_id of the test photos")
    embedding = np.asarray(table.column(c.EMBEDDING)[row].as_py(), dtype=np.float32)[None, :]
    sets_json = artifacts.read_sets_json(sets_dir)  # a mapping: no TensorFlow gs:// reads
    probabilities = load_features_model(model_dir, sets_json).predict(embedding, verbose=0)
    parts = load_partitions(partitions_dir)
    name = figure_file_name(ids[row])
    with tempfile.TemporaryDirectory() as local:
        drawn = os.path.join(local, name)
        plot_progressive_map(parts, {k: np.asarray(v)[0] for k, v in probabilities.items()},
                             table.column(c.LAT)[row].as_py(), table.column(c.LNG)[row].as_py(), drawn,
                             photo_id=str(ids[row]))
        path = artifacts.join(workdir, name)
        artifacts.copy_file(drawn, path)  # local or gs:// alike
    return path


def configure_logging() -> None:
    """Stage progress and job summaries at INFO; Beam's own per-bundle chatter only when it matters."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# The RunConfig keys that scaled_defaults fills from the number of training photos when they are None.
SCALED_KEYS = ("classes_per_set", "planet_t_max", "planet_t_min", "epochs")


def config_keys_help() -> str:
    """The ``--config`` keys with their defaults, for ``--help`` (``None``: scaled to the data)."""
    lines = ["config keys (JSON or YAML --config file; default in brackets, 'scaled' = from the data):"]
    for field in dataclasses.fields(RunConfig):
        scaled = field.name in SCALED_KEYS
        default = "scaled" if scaled and field.default is None else repr(field.default)
        lines.append(f"  {field.name} [{default}]")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="pipelines.run_all", description=__doc__, epilog=config_keys_help(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help=f"training photos: Parquet with {c.PHOTO_ID}, {c.LAT}, "
                   f"{c.LNG}, {c.EMBEDDING}; or an image manifest ({c.IMAGE_URI}), e.g. from ingest_photos")
    p.add_argument("--test", required=True, help="test photos, same columns (with lat/lng: the truth)")
    p.add_argument("--workdir", required=True, help="every artifact and evaluation.json go here (local or gs://)")
    p.add_argument("--config", default=None, help="JSON or YAML file with RunConfig overrides")
    p.add_argument("--resume", action="store_true", help="skip stages whose artifact is complete")
    p.add_argument("--backbone", default="inception_v3",
                   help="for image manifests: inception_v3 (the paper's, default) or a .keras image encoder")
    p.add_argument("--backbone_weights", default=None,
                   help="the backbone's weights: a local file, 'imagenet' or 'random' (tests only); required "
                   "for inception_v3 image manifests; with embeddings: names their backbone for the geolocator")
    return p


def run(argv: Sequence[str] | None = None) -> dict:
    from pipelines.options import check_flags

    p = parser()
    args, beam_args = p.parse_known_args(argv)
    # Whatever run_all does not know must be a Beam pipeline option (for every Beam stage); a typo such as
    # --confg stops here with status 2 instead of silently training with the defaults.
    check_flags(p, beam_args)
    configure_logging()
    return run_chain(args.train, args.test, args.workdir, RunConfig.from_file(args.config), beam_args, args.resume,
                     backbone=args.backbone, backbone_weights=args.backbone_weights)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.run_all")
