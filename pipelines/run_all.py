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
6. ``predictions/`` ``pipelines.batch_predict``: the paper's methods on TEST (Beam, RunInference)
7. ``evaluation.json`` (+ ``.md``, ``accuracy.png``) ``pipelines.evaluate``: accuracy at 1 … 2500 km

Defaults scale with the data (see ``scaled_defaults``); every one is overridable in ``--config FILE`` (JSON
or YAML, keys of :class:`RunConfig`). ``--resume`` skips stages whose artifact is already complete.
Extra arguments (``--runner``, ``--project`` …) go to every Beam job, so the same command submits the Beam
stages to Dataflow or Flink (docs/RUNNERS.md); the local stages (geoclass merging when run without Beam,
training, partitions, evaluation) run where the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import pyarrow.parquet as pq

from schemas import columns as c
from schemas import io as artifact_io

LOG = logging.getLogger("cplanet.run_all")
BACKBONE_FILE = "backbone.keras"
BACKBONE_RECORD_FILE = "backbone.json"


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
    epochs: int | None = None
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
        with open(path) as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"{path}: unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def scaled_defaults(config: RunConfig, n_train: int) -> RunConfig:
    """Fill the ``None`` fields from the number of training photos."""
    classes = config.classes_per_set or int(min(10_000, max(8, round(n_train / config.images_per_class))))
    # PlaNet splits a cell above t_max images, so its cells hold t_max/4..t_max: about the same number of
    # classes as the merged sets when t_max is twice their mean class size.
    t_max = config.planet_t_max or max(4, 2 * n_train // classes)
    t_min = config.planet_t_min or max(1, t_max // 20)
    # About 400k example visits in all, between 3 and 20 passes: the heads sit on frozen features and
    # their held-out accuracy levels off within a few hundred thousand visits (see train/curves).
    epochs = config.epochs or int(min(20, max(3, round(400_000 / max(n_train, 1)))))
    return dataclasses.replace(config, classes_per_set=classes, planet_t_max=t_max, planet_t_min=t_min, epochs=epochs)


def count_rows(path: str) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in artifact_io.list_parquet_files(path))


def embedding_dim(path: str) -> int:
    first = artifact_io.list_parquet_files(path)[0]
    column = pq.ParquetFile(first).read_row_group(0, columns=[c.EMBEDDING]).column(c.EMBEDDING)
    return len(column[0].as_py())


class Stages:
    """Runs named stages in order with timing and a one-line progress report each."""

    def __init__(self, workdir: str, resume: bool, total: int):
        self.workdir, self.resume, self.total, self.done = workdir, resume, total, 0
        self.seconds: dict[str, float] = {}

    def run(self, name: str, artifact: str | None, step: Callable[[], object]) -> None:
        self.done += 1
        marker = artifact and os.path.exists(os.path.join(artifact, artifact_io.SUCCESS_MARKER))
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
    from partition_gen import partitions as partitions_lib
    from pipelines import (
        batch_predict,
        bucket_cells,
        evaluate,
        extract_features,
        generate_geoclass_sets,
        make_examples,
    )
    from trainer import export as trainer_export
    from trainer import train as trainer_train

    os.makedirs(workdir, exist_ok=True)
    beam_args = list(beam_args)
    images = {name: is_image_manifest(path) for name, path in (("train", train), ("test", test))}
    backbone_dir = os.path.join(workdir, "backbone")
    extraction = Stages(workdir, resume, total=sum(images.values()) + 1) if any(images.values()) else None
    if extraction is not None:
        if backbone == "inception_v3" and backbone_weights is None:
            raise SystemExit(
                "run_all: --train/--test are image manifests, so features are extracted first: choose the backbone's "
                "weights with --backbone_weights FILE|imagenet|random (see README: Inception v3 weights offline)"
            )
        if images["test"]:
            from pipelines.common import table_schema

            if not {c.LAT, c.LNG} <= set(table_schema(test).names):
                raise SystemExit(f"run_all: --test {test} has no {c.LAT}/{c.LNG}: the evaluation needs true locations")
        extraction.run("build the backbone", backbone_dir,
                       lambda: build_backbone_artifact(backbone_dir, backbone, backbone_weights))
        for name in ("train", "test"):
            if images[name]:
                features = os.path.join(workdir, "features", name)
                source = train if name == "train" else test
                extraction.run(f"extract {name} features", features, lambda s=source, f=features: extract_features.run(
                    ["--manifest", s, "--output", f, "--backbone", os.path.join(backbone_dir, BACKBONE_FILE)]
                    + beam_args))
                if name == "train":
                    train = features
                else:
                    test = features
    n_train = count_rows(train)
    config = scaled_defaults(config, n_train)
    record = {"train": train, "test": test, "n_train_rows": n_train, "backbone": backbone,
              "backbone_weights": backbone_weights, **dataclasses.asdict(config)}
    record_path = os.path.join(workdir, "run_config.json")
    if resume and os.path.exists(record_path):
        with open(record_path) as f:
            previous = json.load(f)
        # Only the stages after training read TEST and the figure choice; everything else shapes artifacts
        # that --resume would keep, so a change there must start afresh rather than mix two runs.
        changed = sorted(k for k in record if k not in ("test", "figure_photo_id", "methods", "top_k")
                         and previous.get(k) != record[k])
        if changed:
            differences = ", ".join(f"{k}: {previous.get(k)!r} -> {record[k]!r}" for k in changed)
            raise SystemExit(
                f"--resume: {workdir} was built with other settings ({differences}); "
                "use a new --workdir or drop --resume"
            )
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    LOG.info("run config (scaled to %d training rows): %s", n_train, dataclasses.asdict(config))

    path = {name: os.path.join(workdir, name) for name in
            ("bucket", "sets", "examples", "train", "model", "partitions", "predictions")}
    stages = Stages(workdir, resume, total=7)

    stages.run("bucket photos into S2 cells", os.path.join(path["bucket"], "cells"), lambda: bucket_cells.run(
        ["--features", train, "--output", path["bucket"], "--level", str(config.level)] + beam_args))

    set_args = ["--cells", os.path.join(path["bucket"], "cells"), "--output", path["sets"],
                "--n_classes", str(config.classes_per_set), "--n_sampled", str(config.n_sampled_sets),
                "--seed", str(config.seed)]
    if config.planet:
        set_args += ["--planet", f"{config.planet_t_min},{config.planet_t_max}"]
    stages.run("generate geoclass sets", path["sets"], lambda: generate_geoclass_sets.run(set_args + beam_args))

    stages.run("make training examples", path["examples"], lambda: make_examples.run(
        ["--photos", os.path.join(path["bucket"], "photos"), "--geoclass_sets", path["sets"], "--output", path["examples"],
         "--eval_fraction", str(config.eval_fraction)] + beam_args))

    def train_and_export():
        trainer_train.run(
            ["--examples", path["examples"], "--sets", path["sets"], "--job_dir", path["train"],
             "--epochs", str(config.epochs), "--batch_size", str(config.batch_size),
             "--learning_rate", str(config.learning_rate), "--seed", str(config.seed), "--verbose", "0"])
        export_args = ["--job_dir", path["train"], "--sets", path["sets"], "--export_dir", path["model"]]
        if extraction is not None:
            # The very backbone the features came from, recorded as what it is (e.g. inception_v3, random).
            export_args += ["--backbone", os.path.join(backbone_dir, BACKBONE_FILE),
                            "--backbone_record", os.path.join(backbone_dir, BACKBONE_RECORD_FILE)]
        elif backbone_weights is not None or backbone != "inception_v3":
            # Embeddings given with a named backbone: the user says they came from it.
            export_args += ["--backbone", backbone] + (["--backbone_weights", backbone_weights] if backbone_weights else [])
        else:
            # Embeddings of unrecorded origin: a geolocator on a guessed (random) backbone would be a lie.
            LOG.info("no --backbone_weights: exporting the features model only (no image geolocator)")
            export_args.append("--no_geolocator")
        trainer_export.run(export_args)

    stages.run("train the heads and export the model", path["model"], train_and_export)

    def build_partitions():
        parts = partitions_lib.build_partitions_from_artifact(path["sets"])
        partitions_lib.save_partitions(parts, path["partitions"])
        LOG.info("%d combinatorial partitions over %d nodes", parts.n_partitions, parts.total_nodes)

    stages.run("build combinatorial partitions", path["partitions"], build_partitions)

    run_date = "1970-01-01"  # evaluation runs are not nightly runs; a fixed date makes reruns replace them
    # Random weights were asked for by name (tests): the predictions may use them, and say so.
    random_flag = ["--allow_random_backbone"] if backbone_weights == "random" else []
    predictions = batch_predict.run_output_dir(path["predictions"], run_date)
    stages.run("predict the test photos", predictions, lambda: batch_predict.run(
        ["--manifest", test, "--model", path["model"], "--partitions", path["partitions"],
         "--output", path["predictions"], "--run_date", run_date, "--methods", config.methods,
         "--top_k", str(config.top_k)] + random_flag + beam_args))

    report: dict = {}

    def run_evaluation():
        report.update(evaluate.run(["--predictions", predictions, "--truth", test, "--out", workdir]))

    stages.run("evaluate", None, run_evaluation)
    figure = draw_progressive_map(workdir, test, path["model"], path["sets"], path["partitions"],
                                  config.figure_photo_id)
    LOG.info("Figure 4 (sets added one by one) for one test photo: %s", figure)
    with open(os.path.join(workdir, "stage_seconds.json"), "w") as f:
        json.dump(stages.seconds, f, indent=2)
    return report


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
        raise SystemExit(f"figure_photo_id '{photo_id}' is not in {test}")
    embedding = np.asarray(table.column(c.EMBEDDING)[row].as_py(), dtype=np.float32)[None, :]
    probabilities = load_features_model(model_dir, sets_dir).predict(embedding, verbose=0)
    parts = load_partitions(partitions_dir)
    path = os.path.join(workdir, figure_file_name(ids[row]))
    plot_progressive_map(parts, {k: np.asarray(v)[0] for k, v in probabilities.items()},
                         table.column(c.LAT)[row].as_py(), table.column(c.LNG)[row].as_py(), path,
                         photo_id=str(ids[row]))
    return path


def configure_logging() -> None:
    """Stage progress and job summaries at INFO; Beam's own per-bundle chatter only when it matters."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help=f"training photos: Parquet with {c.PHOTO_ID}, {c.LAT}, "
                        f"{c.LNG}, {c.EMBEDDING}; or an image manifest ({c.IMAGE_URI}), e.g. from ingest_photos")
    parser.add_argument("--test", required=True, help="test photos, same columns (with lat/lng: the truth)")
    parser.add_argument("--workdir", required=True, help="every artifact and evaluation.json go here")
    parser.add_argument("--config", default=None, help="JSON or YAML file with RunConfig overrides")
    parser.add_argument("--resume", action="store_true", help="skip stages whose artifact is complete")
    parser.add_argument("--backbone", default="inception_v3",
                        help="for image manifests: inception_v3 (the paper's) or a .keras image encoder")
    parser.add_argument("--backbone_weights", default=None,
                        help="the backbone's weights: a local file, 'imagenet' or 'random' (tests only); required "
                        "for inception_v3 image manifests; with embeddings: names their backbone for the geolocator")
    args, beam_args = parser.parse_known_args(argv)
    configure_logging()
    return run_chain(args.train, args.test, args.workdir, RunConfig.from_file(args.config), beam_args, args.resume,
                     backbone=args.backbone, backbone_weights=args.backbone_weights)


if __name__ == "__main__":
    run()
