"""End to end: `pipelines.run_all` on data that is not the demo's sample writes evaluation.json as specified."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import sampledata as sample_data
from partition_gen.geo import haversine_km
from partition_gen.retrieval import prior_only_baseline
from pipelines import run_all
from schemas import columns as c
from schemas.cli import UsageError

THRESHOLDS = [1, 5, 10, 25, 50, 100, 200, 750, 2500]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_all")
    paths = sample_data.make_sample(root / "sample", n_train=3000, seed=7, model=sample_data.FeatureModel(dim=32), test_sets=("yfcc4k",), plot=False)
    # A test file of our own: 400 of the YFCC4k photos, so nothing here is the bundled demo input.
    test = pq.read_table(paths["test_yfcc4k"])
    pick = np.random.default_rng(3).choice(test.num_rows, 400, replace=False)
    test_path = root / "my_test.parquet"
    pq.write_table(test.take(pick), test_path)
    config = root / "config.json"
    config.write_text(json.dumps({"classes_per_set": 25, "epochs": 4, "seed": 1}))
    workdir = root / "work"
    report = run_all.run(["--train", paths["train"], "--test", str(test_path), "--workdir", str(workdir),
                          "--config", str(config)])
    return {"report": report, "workdir": workdir, "train": paths["train"], "test": test_path}


def _haversine_km(lat1, lng1, lat2, lng2):
    """Reference great-circle distance, written here so the check does not reuse the code's own."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lng2 - lng1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def test_evaluation_json_rows_recomputed_from_the_predictions(chain):
    """Every method's row in evaluation.json equals the accuracies recomputed with pandas from the written
    predictions and the test file's true locations: a wrong join, distance, threshold or method label fails."""
    import pandas as pd

    written = json.loads((chain["workdir"] / "evaluation.json").read_text())
    assert written["thresholds_km"] == THRESHOLDS
    expected = {"ClassSet 1", "ClassSet 2", "ClassSet 3", "ClassSet 4", "ClassSet 5", "PlaNet", "Average[1-5]",
                "SimpleSum[1-5]", "CPlaNet[1-5]", "CPlaNet[1-5,PlaNet]"}
    assert expected <= set(written["methods"])

    files = [f for f in (chain["workdir"] / "predictions").rglob("*.parquet") if "dead" not in str(f)]
    predictions = pd.concat([pq.read_table(f).to_pandas() for f in files])
    predictions = predictions[[c.PHOTO_ID, c.METHOD, c.LAT, c.LNG]]
    truth = pq.read_table(chain["test"]).to_pandas()[[c.PHOTO_ID, c.LAT, c.LNG]]
    joined = predictions.merge(truth, on=c.PHOTO_ID, suffixes=("_pred", "_true"), validate="many_to_one")
    joined["km"] = _haversine_km(joined["lat_pred"], joined["lng_pred"], joined["lat_true"], joined["lng_true"])
    checked = 0
    for method, rows in joined.groupby(c.METHOD):
        row = written["methods"][method]
        assert row["n"] == len(rows) == 400, method
        for t in THRESHOLDS:
            assert row["accuracy"][str(t)] == pytest.approx(float((rows["km"] < t).mean()), abs=1e-9), (method, t)
        checked += 1
    assert checked >= 9  # every predicted method, not only some
    # Average[1-5]: the mean of the five single sets' accuracies, radius by radius.
    for t in THRESHOLDS:
        singles = [written["methods"][f"ClassSet {i}"]["accuracy"][str(t)] for i in range(1, 6)]
        assert written["methods"]["Average[1-5]"]["accuracy"][str(t)] == pytest.approx(np.mean(singles), abs=1e-9)
    # Refinement rows and confidence radii (stage 6), and the epoch each head was exported from.
    assert {"CPlaNet[1-5]+R", "CPlaNet[1-5,PlaNet]+R"} <= set(written["methods"])
    for name in ("CPlaNet[1-5]", "CPlaNet[1-5]+R", "ClassSet 1"):
        assert 0.0 < written["methods"][name]["within_radius50"] < written["methods"][name]["within_radius90"] <= 1.0
    training = written["training"]
    assert set(training["best_epoch"]) == {"set1", "set2", "set3", "set4", "set5", "planet"}
    assert all(1 <= e <= training["epochs_run"] <= 4 for e in training["best_epoch"].values())


def test_config_overrides_and_scaled_defaults_are_recorded(chain):
    config = json.loads((chain["workdir"] / "run_config.json").read_text())
    assert config["classes_per_set"] == 25 and config["epochs"] == 4 and config["seed"] == 1
    assert config["n_train_rows"] == 3000
    # Not overridden, so scaled to the data: PlaNet thresholds from the class size.
    assert config["planet_t_max"] == 2 * 3000 // 25 and config["planet_t_min"] == config["planet_t_max"] // 20
    sets = json.loads((chain["workdir"] / "sets" / "sets.json").read_text())
    merged = [s for s in sets["sets"] if s["name"].startswith("set")]
    assert [s["n_classes"] for s in merged[:2]] == [25, 25]


def test_the_chain_learns_more_than_the_prior(chain):
    """CPlaNet at 750 km beats always answering the densest training place, computed independently."""
    train = pq.read_table(chain["train"])
    test = pq.read_table(chain["test"])
    densest = prior_only_baseline(train.column(c.LAT).to_numpy(), train.column(c.LNG).to_numpy())
    lat, lng = densest.predict(test.num_rows)
    prior_750 = float(np.mean(haversine_km(test.column(c.LAT).to_numpy(), test.column(c.LNG).to_numpy(), lat, lng) < 750))
    cplanet_750 = chain["report"]["methods"]["CPlaNet[1-5]"]["accuracy"]["750"]
    assert cplanet_750 > prior_750 + 0.05, (cplanet_750, prior_750)


def test_resume_skips_complete_stages(chain, caplog):
    caplog.set_level("INFO", logger="cplanet.run_all")
    run_all.run(["--train", chain["train"], "--test", str(chain["test"]), "--workdir", str(chain["workdir"]),
                 "--config", str(chain["workdir"].parent / "config.json"), "--resume"])
    skipped = [r.getMessage() for r in caplog.records if "skipped (--resume)" in r.getMessage()]
    assert len(skipped) == 7, skipped  # every stage but the evaluation, which always reruns


def test_figure4_command_draws_the_chosen_photo(chain, tmp_path):
    from pipelines import draw_figure4

    photo_id = pq.read_table(chain["test"]).column(c.PHOTO_ID)[5].as_py()
    out = tmp_path / "fig.png"
    assert draw_figure4.run(["--workdir", str(chain["workdir"]), "--features", str(chain["test"]),
                             "--photo_id", photo_id, "--out", str(out)]) == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(UsageError, match="not in"):
        draw_figure4.run(["--workdir", str(chain["workdir"]), "--features", str(chain["test"]), "--photo_id", "nope"])


def test_resume_refuses_a_workdir_built_with_other_settings(chain, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"classes_per_set": 30, "epochs": 4, "seed": 1}))
    with pytest.raises(UsageError, match="classes_per_set: 25 -> 30"):
        run_all.run(["--train", chain["train"], "--test", str(chain["test"]), "--workdir", str(chain["workdir"]),
                     "--config", str(other), "--resume"])
