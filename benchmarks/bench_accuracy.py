"""Accuracy benchmark: the paper's Tables 2 and 3 on real test locations, plus baselines and stage throughput.

1. Simulated features (``sampledata``; model fixed before any training, see its docstring):
   training photos at MP-16 locations, test photos at the real Im2GPS3k and YFCC4k coordinates. The whole
   chain (``pipelines.run_all``) runs once; YFCC4k is predicted with the same model and partitions.
   Beside it, the kNN-retrieval baseline on the same features (the paper's Deep-Ret).
2. A real-signal run: YFCC25600 with its Places365 scene labels as the features, a held-out split, beside a
   prior-only baseline (always predict the densest place).

Records ``accuracy`` in bench/results.json: the tables, the honest outcome (does CPlaNet[1-5] beat every
single set at 1, 5, 10 and 25 km; does NormalizedSum beat SimpleSum) and each stage's rows/s.

    python -m benchmarks.bench_accuracy [--n_train 100000] [--workdir out/bench_accuracy]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

import sampledata as sample_data
from benchmarks.results import record
from partition_gen.evaluation import THRESHOLDS_KM, accuracy_at, accuracy_dict, to_markdown
from partition_gen.geo import haversine_km
from partition_gen.retrieval import knn_predict, prior_only_baseline
from pipelines import batch_predict, evaluate, run_all
from schemas import columns as c
from schemas import io as artifact_io

LOG = logging.getLogger("bench.accuracy")
COMPARE_KM = (1, 5, 10, 25)


def _columns(path: str):
    table = artifact_io.read_table(path)
    emb = np.stack(table.column(c.EMBEDDING).to_numpy(zero_copy_only=False)).astype(np.float32)
    return (table.column(c.PHOTO_ID).to_pylist(), table.column(c.LAT).to_numpy(), table.column(c.LNG).to_numpy(), emb)


def _row(dist_km: np.ndarray) -> dict:
    acc = accuracy_at(dist_km, THRESHOLDS_KM)
    return {"n": int(dist_km.size), "median_km": float(np.median(dist_km)), "accuracy": accuracy_dict(acc)}


def _acc(report: dict, method: str, km: int) -> float:
    return report["methods"][method]["accuracy"][str(km)]


def outcome(report: dict) -> dict:
    """Whether the paper's claims hold here, stated as booleans with the numbers behind them."""
    methods = report["methods"]
    singles = sorted(m for m in methods if m.startswith("ClassSet "))
    full = next((m for m in methods if m.startswith("CPlaNet[") and "PlaNet]" not in m and m.endswith(f"-{len(singles)}]")), None)
    simple = next((m for m in methods if m.startswith("SimpleSum[")), None)
    result: dict = {"singles": singles, "cplanet": full, "simplesum": simple}
    if full:
        result["cplanet_beats_every_single_set"] = {
            str(km): bool(all(_acc(report, full, km) > _acc(report, s, km) for s in singles)) for km in COMPARE_KM
        }
    if full and simple:
        result["normalizedsum_beats_simplesum"] = {
            str(km): bool(_acc(report, full, km) > _acc(report, simple, km)) for km in COMPARE_KM
        }
    return result


def _predict_and_evaluate(workdir: str, test_path: str, name: str) -> dict:
    out = os.path.join(workdir, f"predictions_{name}")
    batch_predict.run(["--manifest", test_path, "--model", os.path.join(workdir, "model"),
                       "--partitions", os.path.join(workdir, "partitions"), "--output", out,
                       "--run_date", "1970-01-01", "--methods", "paper"])
    return evaluate.run(["--predictions", batch_predict.run_output_dir(out, "1970-01-01"), "--truth", test_path,
                         "--out", os.path.join(workdir, f"evaluation_{name}")])


def simulated(n_train: int, workdir: str, seed: int) -> dict:
    sample_dir = os.path.join(workdir, "sample")
    t0 = time.time()
    paths = sample_data.make_sample(sample_dir, n_train=n_train, seed=seed)
    sample_seconds = time.time() - t0
    run_dir = os.path.join(workdir, "run")
    tables = {"im2gps3k": run_all.run_chain(paths["train"], paths["test_im2gps3k"], run_dir, run_all.RunConfig(seed=seed))}
    tables["yfcc4k"] = _predict_and_evaluate(run_dir, paths["test_yfcc4k"], "yfcc4k")

    _, train_lat, train_lng, train_emb = _columns(paths["train"])
    for name in ("im2gps3k", "yfcc4k"):
        _, lat, lng, emb = _columns(paths[f"test_{name}"])
        p_lat, p_lng = knn_predict(train_emb, train_lat, train_lng, emb, k=1)
        tables[name]["methods"]["Deep-Ret (kNN, k=1)"] = _row(haversine_km(lat, lng, p_lat, p_lng))

    with open(os.path.join(run_dir, "stage_seconds.json")) as f:
        seconds = json.load(f)
    config = json.load(open(os.path.join(run_dir, "run_config.json")))
    throughput = {"sample_data_photos_per_s": round(n_train / sample_seconds)}
    for stage, secs in seconds.items():
        throughput[f"{stage} (s)"] = secs
    return {"tables": tables, "run_config": config, "stage_seconds": throughput}


def scene(workdir: str, seed: int) -> dict:
    paths = sample_data.make_scene_sample(os.path.join(workdir, "scene_sample"), seed=seed)
    report = run_all.run_chain(paths["train"], paths["test"], os.path.join(workdir, "scene_run"),
                               run_all.RunConfig(seed=seed))
    _, train_lat, train_lng, _ = _columns(paths["train"])
    _, lat, lng, _ = _columns(paths["test"])
    p_lat, p_lng = prior_only_baseline(train_lat, train_lng).predict(len(lat))
    report["methods"]["Prior only (densest place)"] = _row(haversine_km(lat, lng, p_lat, p_lng))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_train", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=os.path.join("out", "bench_accuracy"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    sim = simulated(args.n_train, args.workdir, args.seed)
    real = scene(args.workdir, args.seed)
    figures = {
        "summary": f"Simulated features, {args.n_train:,} training photos at MP-16 locations (seed {args.seed}); "
                   "test photos at the real Im2GPS3k / YFCC4k coordinates. Real-signal run: YFCC25600 "
                   "Places365 scene labels as features.",
        "im2gps3k": sim["tables"]["im2gps3k"],
        "yfcc4k": sim["tables"]["yfcc4k"],
        "yfcc25600_scene_labels": real,
        "outcome_im2gps3k": outcome(sim["tables"]["im2gps3k"]),
        "outcome_yfcc4k": outcome(sim["tables"]["yfcc4k"]),
        "run_config": sim["run_config"],
        "stage_seconds": sim["stage_seconds"],
    }
    for name in ("im2gps3k", "yfcc4k", "yfcc25600_scene_labels"):
        print(to_markdown(figures[name], name))
    print(json.dumps({k: figures[k] for k in ("outcome_im2gps3k", "outcome_yfcc4k")}, indent=2))
    record("accuracy", figures)


if __name__ == "__main__":
    main()
