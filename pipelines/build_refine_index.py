"""Build the refinement index and calibrate the confidence radii of a model, into MODEL/refine/.

Reads the training-examples artifact (``pipelines.make_examples``): the train split's features, locations and
labels become the compact refinement index (``partition_gen.refine``: PQ codes + float32 locations grouped by
partition); the eval split, predicted by the exported model and combined over the partitions, chooses the
refinement settings of each combined method and calibrates the 50 %/90 % confidence radii of every method
(``partition_gen.confidence``), on at most 25,000 eval photos (a seeded sample of a larger split).
Nothing here looks at a test set.

    python -m pipelines.build_refine_index --examples out/examples --model out/model \\
        --partitions out/partitions [--code_bytes 32] [--index_from out_other/model]

``pipelines.batch_predict`` (and ``locate``) then add "<method>+R" rows and radius50_km/radius90_km when the
model directory has ``refine/``. A local job: the train split of one examples artifact fits in memory as
codes; the eval split is thousands of rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from partition_gen import confidence, refine
from partition_gen.combine import NORMALIZED_SUM
from partition_gen.evaluation import THRESHOLDS_KM, accuracy_at, accuracy_dict, standard_methods
from partition_gen.geo import haversine_km
from partition_gen.partitions import load_partitions
from schemas import artifacts
from schemas.cli import Parser

LOG = logging.getLogger("cplanet.build_refine_index")
CONFIDENCE_FILE = confidence.CONFIDENCE_FILE
CALIBRATION_TOP_K = refine.CALIBRATION_TOP_K


def read_split(examples_dir: str, split: str) -> dict:
    """Every example of a split as arrays: photo_id, lat, lng, embedding (n, D), labels {set: (n,)}."""
    import tensorflow as tf

    from schemas import columns as c
    from schemas.tfrecord import feature_spec
    from trainer import inputs

    info = inputs.read_examples_info(examples_dir)
    files = inputs.list_shards(examples_dir, split)
    spec = feature_spec(info.embedding_dim, info.set_names)
    parts: dict[str, list] = {}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
    for batch in dataset.map(lambda b: tf.io.parse_example(b, spec)):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value.numpy())
    out = {key: np.concatenate(values) for key, values in parts.items()}
    return {
        "photo_id": out[c.PHOTO_ID],
        "lat": out[c.LAT].astype(np.float64),
        "lng": out[c.LNG].astype(np.float64),
        "embedding": out[c.EMBEDDING].astype(np.float32),
        "labels": {name: out[c.label_column(name)] for name in info.set_names},
    }


def load_model(model_dir: str, partitions):
    """The exported model, checked against the partitions' sets (``trainer.export``)."""
    from trainer.export import load_features_model

    return load_features_model(model_dir, {"sets_checksum": partitions.sets_checksum,
                                           "set_names": list(partitions.set_names),
                                           "n_classes": dict(zip(partitions.set_names, partitions.n_classes))})


def predict_probabilities(model_dir: str, partitions, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Every head's (n, K) probabilities of a few thousand photos (a test set); see predict_eval_split for more."""
    out = load_model(model_dir, partitions).predict(embeddings, batch_size=1024, verbose=0)
    return {name: np.asarray(out[name]) for name in partitions.set_names}


# Photos of the eval split predicted and combined at once. The heads' probabilities are photos x classes for
# every set: all of a 100k-photo eval split at 10,000 classes and six sets would be 24 GB of float32; a chunk
# of 2,048 is 0.5 GB.
EVAL_CHUNK = 2048


# Eval photos the settings and radii are chosen on. Two settings per method and a 10-bin quantile fit are
# pinned down long before this; beyond it the choice only costs time, and super-linearly: each eval photo
# searches the training photos of its top partitions, which grow with the corpus (a 1M-photo run's 100k eval
# photos took most of its refinement stage).
MAX_CALIBRATION_PHOTOS = 25_000


def calibration_sample(split: dict, limit: int, seed: int) -> dict:
    """The split itself when it has at most ``limit`` photos, else a seeded sample of ``limit`` of them (in
    split order)."""
    n = len(split["photo_id"])
    if n <= limit:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    LOG.info("settings and confidence radii chosen on %d of the %d eval photos", limit, n)
    return {key: ({k: v[keep] for k, v in value.items()} if isinstance(value, dict) else value[keep])
            for key, value in split.items()}


@dataclass(frozen=True)
class EvalPrediction:
    """One method's combined prediction of the eval split: what settings search, refinement and calibration
    read, without the heads' probabilities (their summary is in ``features``)."""

    topk_ids: np.ndarray  # (n, CALIBRATION_TOP_K) partition ids, best first
    lat: np.ndarray
    lng: np.ndarray
    features: np.ndarray  # confidence.combiner_features, unrefined


def predict_eval_split(model, set_names: Sequence[str], combiners: dict, embeddings: np.ndarray,
                       chunk: int = EVAL_CHUNK) -> dict[str, EvalPrediction]:
    """Every combiner's prediction of the eval split, ``chunk`` photos at a time so that memory does not grow
    with the split."""
    pieces: dict[str, list] = {name: [] for name in combiners}
    n, last_log = len(embeddings), time.time()
    for start in range(0, n, chunk):
        out = model.predict(embeddings[start:start + chunk], batch_size=1024, verbose=0)
        probs = {name: np.asarray(out[name]) for name in set_names}
        for name, combiner in combiners.items():
            pred = combiner.predict(probs)
            heads = [probs[s] for s in combiner.partitions.set_names]
            features = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5],
                                                    combiner.partitions.tuples, heads)
            pieces[name].append((pred.topk_ids, pred.lat, pred.lng, features))
        if time.time() - last_log > 30:
            LOG.info("eval split: %d of %d photos predicted and combined", min(start + chunk, n), n)
            last_log = time.time()
    return {name: EvalPrediction(*(np.concatenate(column) for column in zip(*chunks)))
            for name, chunks in pieces.items()}


def refined_methods(set_names: Sequence[str]):
    """The methods that get a "+R" row: every NormalizedSum combination of the paper's table."""
    return [m for m in standard_methods(set_names) if len(m.set_names) > 1 and m.rule == NORMALIZED_SUM]


def build(examples_dir: str, model_dir: str, partitions_dir: str, code_bytes: int = refine.DEFAULT_CODE_BYTES,
          seed: int = 0, thresholds_km: Sequence[float] = THRESHOLDS_KM, index_from: str | None = None) -> dict:
    """Write MODEL/refine/ and return its summary (bytes per photo, chosen settings, eval-split coverage).

    ``index_from``: another model directory whose refinement index encodes these same training photos over
    these partitions (a run that differs only in training, e.g. label smoothing): its codes are reused, and
    only the settings and confidence radii, which depend on the model, are chosen again.
    """
    started = time.time()
    parts = load_partitions(partitions_dir)
    train = read_split(examples_dir, "train")
    photo_part = refine.photo_partitions(parts, train["labels"])
    index = reusable_index(index_from, parts, train, photo_part, code_bytes) if index_from else None
    if index is None:
        index = refine.build_index(train["embedding"], train["lat"], train["lng"], photo_part, parts, code_bytes,
                                   seed)
        LOG.info("index of %d training photos built in %.1f s", index.n_photos, time.time() - started)

    held = calibration_sample(read_split(examples_dir, "eval"), MAX_CALIBRATION_PHOTOS, seed)
    combiners = {m.name: m.combiner(parts, top_k=CALIBRATION_TOP_K) for m in standard_methods(parts.set_names)}
    predictions = predict_eval_split(load_model(model_dir, parts), parts.set_names, combiners, held["embedding"])
    settings, calibrations, report = {}, {}, {}
    refined = {m.name for m in refined_methods(parts.set_names)}
    for method in standard_methods(parts.set_names):
        pred = predictions[method.name]
        err = haversine_km(pred.lat, pred.lng, held["lat"], held["lng"])
        calibrations[method.name] = confidence.fit(pred.features, err)
        report[method.name] = {"eval_median_km": float(np.median(err)),
                               "eval_accuracy": accuracy_dict(accuracy_at(err, thresholds_km), thresholds_km)}
        if method.name not in refined:
            continue
        refiner = refine.Refiner(index, combiners[method.name].partitions, parts)
        chosen = refine.choose_settings(refiner, pred.topk_ids, pred.lat, pred.lng, held["embedding"],
                                        held["lat"], held["lng"], thresholds_km)
        settings[method.name] = {"top_partitions": chosen["top_partitions"],
                                 "min_similarity": chosen["min_similarity"]}
        out = refiner.refine(pred.topk_ids, pred.lat, pred.lng, held["embedding"], **settings[method.name])
        err_r = haversine_km(out.lat, out.lng, held["lat"], held["lng"])
        name_r = refine.refined_name(method.name)
        calibrations[name_r] = confidence.fit(confidence.with_refinement(pred.features, out.moved, out.similarity),
                                              err_r)
    index = index.with_settings(methods=settings)
    directory = refine.index_dir(model_dir)
    artifacts.remove_marker(directory)  # incomplete from here until save_index writes the checksummed marker
    write_confidence(directory, calibrations)
    refine.save_index(index, directory)  # writes _SUCCESS last
    summary = {"n_train_photos": index.n_photos, "n_eval_photos": int(len(err)), "dim": index.dim,
               "code_bytes": int(index.codes.shape[1]), "bytes_per_photo": index.bytes_per_photo(),
               "methods": report, "seconds": round(time.time() - started, 1)}
    LOG.info("refinement index and confidence radii in %s (%.1f bytes per photo)", directory, index.bytes_per_photo())
    return summary


def reusable_index(model_dir: str, parts, train: dict, photo_part: np.ndarray, code_bytes: int):
    """The refinement index of ``model_dir`` when it encodes exactly these training photos over these
    partitions with codes of this size, else None (with the reason logged). Reuse is only a shortcut, so a
    damaged source index is rebuilt rather than fatal."""
    try:
        index = refine.load_index(model_dir)
        reason = _not_reusable(index, parts, train, photo_part, code_bytes)
    except artifacts.ArtifactChecksumError as error:
        index, reason = None, str(error)
    if reason:
        LOG.warning("not reusing the refinement index of %s: %s; building one", model_dir, reason)
        return None
    LOG.info("reusing the refinement index of %s (%d training photos)", model_dir, index.n_photos)
    return index.with_settings(methods={})


def _not_reusable(index, parts, train: dict, photo_part: np.ndarray, code_bytes: int) -> str | None:
    if index is None:
        return "it has no refinement index"
    if index.partitions_id != parts.partitions_id:
        return f"its index was built for partitions {index.partitions_id}"
    if index.codes.shape[1] != min(code_bytes, index.dim) or index.dim != train["embedding"].shape[1]:
        return f"its index has {index.codes.shape[1]}-byte codes of {index.dim}-d features"
    if not refine.encodes_photos(index, train["lat"], train["lng"], photo_part):
        return "its index encodes other training photos"
    return None


# One copy of each helper: the files are read and written by partition_gen.confidence.
write_confidence = confidence.write_calibrations
load_confidence = confidence.load_calibrations


def run(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="pipelines.build_refine_index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", required=True, help="training-examples artifact (make_examples)")
    parser.add_argument("--model", required=True, help="exported model directory; refine/ is written into it")
    parser.add_argument("--partitions", required=True, help="partitions artifact of the model's sets")
    parser.add_argument("--code_bytes", type=int, default=refine.DEFAULT_CODE_BYTES,
                        help="PQ code bytes per training photo (one per sub-vector)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index_from", metavar="MODEL_DIR",
                        help="reuse this model directory's refinement index when it encodes the same training "
                             "photos over the same partitions (a run that differs only in training)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return build(args.examples, args.model, args.partitions, args.code_bytes, args.seed, index_from=args.index_from)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.build_refine_index")
