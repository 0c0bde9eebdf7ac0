"""The nightly predictions map from a predictions folder: the chosen method's points, coasts drawn offline."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen import maps
from pipelines import draw_predictions_map as tool
from tests.test_maps import CAPES, coast_found, offline  # noqa: F401  (fixture)


def _predictions(folder, n=200):
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.normal(40.4, 0.5, n), rng.normal(-33.9, 0.5, n)])
    lng = np.concatenate([rng.normal(-3.7, 0.5, n), rng.normal(151.2, 0.5, n)])
    methods = ["CPlaNet[1-5,PlaNet]"] * n + ["ClassSet 1"] * n  # Madrid for CPlaNet, Sydney for ClassSet 1
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"photo_id": [f"p{i}" for i in range(2 * n)], "method": methods, "lat": lat, "lng": lng}),
                   folder / "predictions-00000-of-00001.parquet")
    (folder / "dead_letters").mkdir()
    pq.write_table(pa.table({"reason": ["bad_image"]}), folder / "dead_letters" / "part-0.parquet")


def test_density_map_of_the_default_method_offline(tmp_path, offline, monkeypatch):  # noqa: F811
    run_dir = tmp_path / "predictions" / "run_date=2026-11-30"
    _predictions(run_dir)
    monkeypatch.chdir(tmp_path)
    path = tool.run(["--predictions", str(run_dir)])
    assert path == "predictions_map_run_date=2026-11-30.png"
    panels = {p["panel"]: p for p in maps.read_georeference(tmp_path / path)}
    # The densest region is the CPlaNet method's (Madrid), not ClassSet 1's (Sydney).
    zoom = panels["zoom1"]
    assert zoom["lng"][0] < -3.7 < zoom["lng"][1] and zoom["lat"][0] < 40.4 < zoom["lat"][1]
    assert coast_found(tmp_path / path, "world", CAPES) == [True] * len(CAPES)


def test_method_choice_and_bad_input(tmp_path):
    assert tool.pick_method(["ClassSet 1", "SimpleSum[1-5]", "CPlaNet[1-2]", "CPlaNet[1-5,PlaNet]"]) == "CPlaNet[1-5,PlaNet]"
    run_dir = tmp_path / "run"
    _predictions(run_dir, n=5)
    with pytest.raises(SystemExit, match="--method: 'PlaNet' is not in"):
        tool.run(["--predictions", str(run_dir), "--method", "PlaNet", "--out", str(tmp_path / "m.png")])
    with pytest.raises(SystemExit, match="no prediction Parquet files"):
        tool.run(["--predictions", str(tmp_path / "missing")])
