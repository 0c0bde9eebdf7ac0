"""The whole CPlaNet chain on user data, in one command, with defaults scaled to the data.

    python -m pipelines.run_all --train TRAIN.parquet --test TEST.parquet --workdir DIR [--config FILE]

TRAIN and TEST are Parquet files (or globs/directories) with ``photo_id`` (string), ``lat``, ``lng`` (double)
and ``embedding`` (list of float), e.g. features written by ``pipelines.extract_features``. The stages, each
writing one artifact under DIR (docs/ARTIFACTS.md), so any stage can be rerun alone:

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
    # A budget of about 2M example visits, between 8 and 40 passes; early stopping on the eval split decides
    # where training actually ends (the heads' held-out accuracy levels off within a few hundred thousand).
    epochs = config.epochs or int(min(40, max(8, round(2_000_000 / max(n_train, 1)))))
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


def run_chain(train: str, test: str, workdir: str, config: RunConfig, beam_args: Sequence[str] = (),
              resume: bool = False) -> dict:
    """Run every stage; returns the evaluation report (also written to ``workdir/evaluation.json``)."""
    from partition_gen import partitions as partitions_lib
    from pipelines import batch_predict, bucket_cells, evaluate, generate_geoclass_sets, make_examples
    from trainer import export as trainer_export
    from trainer import train as trainer_train
    from trainer.backbone import FEATURE_DIM

    os.makedirs(workdir, exist_ok=True)
    n_train = count_rows(train)
    config = scaled_defaults(config, n_train)
    record = {"train": train, "test": test, "n_train_rows": n_train, **dataclasses.asdict(config)}
    record_path = os.path.join(workdir, "run_config.json")
    if resume and os.path.exists(record_path):
        with open(record_path) as f:
            previous = json.load(f)
        # Only the stages after training read TEST and the figure choice; everything else shapes artifacts
        # that --resume would keep, so a change there must start afresh rather than mix two runs.
        # Training length settings are resumable in the trainer itself (it continues or stops where it is).
        resumable = ("test", "figure_photo_id", "methods", "top_k", "refine", "epochs", "early_stopping_patience",
                     "early_stopping_min_delta")
        changed = sorted(k for k in record if k not in resumable
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
    beam_args = list(beam_args)
    stages = Stages(workdir, resume, total=8)

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
             "--learning_rate", str(config.learning_rate), "--seed", str(config.seed), "--verbose", "0"]
            + (["--early_stopping_patience", str(config.early_stopping_patience),
                "--early_stopping_min_delta", str(config.early_stopping_min_delta)]
               if config.early_stopping_patience else [])
            + (["--label_smoothing_km", str(config.label_smoothing_km)] if config.label_smoothing_km else []))
        export_args = ["--job_dir", path["train"], "--sets", path["sets"], "--export_dir", path["model"]]
        # The image geolocator stacks the heads on Inception v3, so it exists only for 2048-d features.
        if embedding_dim(train) != FEATURE_DIM:
            export_args.append("--no_geolocator")
        trainer_export.run(export_args)

    stages.run("train the heads and export the model", path["model"], train_and_export)

    def build_partitions():
        parts = partitions_lib.build_partitions_from_artifact(path["sets"])
        partitions_lib.save_partitions(parts, path["partitions"])
        LOG.info("%d combinatorial partitions over %d nodes", parts.n_partitions, parts.total_nodes)

    stages.run("build combinatorial partitions", path["partitions"], build_partitions)

    def build_refinement():
        from pipelines import build_refine_index

        summary = build_refine_index.build(path["examples"], path["model"], path["partitions"],
                                           config.code_bytes, config.seed)
        with open(os.path.join(workdir, "refine_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)

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
    predictions = batch_predict.run_output_dir(path["predictions"], run_date)
    stages.run("predict the test photos", predictions, lambda: batch_predict.run(
        ["--manifest", test, "--model", path["model"], "--partitions", path["partitions"],
         "--output", path["predictions"], "--run_date", run_date, "--methods", config.methods,
         "--top_k", str(config.top_k)] + beam_args))

    report: dict = {}

    def run_evaluation():
        report.update(evaluate.run(["--predictions", predictions, "--truth", test, "--out", workdir]))
        # The epoch each head was exported from, so the training budget is a reported fact, not a guess.
        report["training"] = trainer_train.training_summary(path["train"])
        LOG.info("heads exported at their best eval epochs %s (%d epochs run%s)", report["training"]["best_epoch"],
                 report["training"]["epochs_run"], ", stopped early" if report["training"]["stopped_early"] else "")
        with open(os.path.join(workdir, "evaluation.json"), "w") as f:
            json.dump(report, f, indent=2)

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

    from partition_gen.figures import plot_progressive_map
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
    path = os.path.join(workdir, f"figure4_{ids[row]}.png".replace(os.sep, "_"))
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
                        f"{c.LNG}, {c.EMBEDDING}")
    parser.add_argument("--test", required=True, help="test photos, same columns")
    parser.add_argument("--workdir", required=True, help="every artifact and evaluation.json go here")
    parser.add_argument("--config", default=None, help="JSON or YAML file with RunConfig overrides")
    parser.add_argument("--resume", action="store_true", help="skip stages whose artifact is complete")
    args, beam_args = parser.parse_known_args(argv)
    configure_logging()
    return run_chain(args.train, args.test, args.workdir, RunConfig.from_file(args.config), beam_args, args.resume)


if __name__ == "__main__":
    run()
