"""Evaluation: Eq. 5 accuracies against an independent distance formula, method names, Average rows, writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partition_gen.combine import NORMALIZED_SUM, SIMPLE_SUM
from partition_gen.evaluation import (
    THRESHOLDS_KM,
    accuracy_values,
    evaluate,
    method_name,
    parse_method,
    standard_methods,
    to_markdown,
    write_report,
)

SETS = ["set1", "set2", "set3", "set4", "set5", "planet"]


def great_circle_km(lat1, lng1, lat2, lng2):
    """Independent of haversine: the angle between unit vectors, by atan2 of cross and dot products."""
    def unit(lat, lng):
        lat, lng = np.radians(lat), np.radians(lng)
        return np.stack([np.cos(lat) * np.cos(lng), np.cos(lat) * np.sin(lng), np.sin(lat)], axis=-1)

    a, b = unit(lat1, lng1), unit(lat2, lng2)
    return 6371.0 * np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1))


def test_accuracies_match_a_direct_count():
    rng = np.random.default_rng(0)
    n = 400
    t_lat, t_lng = rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)
    # Errors spread over every scale, from metres to half the globe.
    scale = 10 ** rng.uniform(-3, 1.9, n)
    p_lat = np.clip(t_lat + rng.normal(0, 1, n) * scale, -90, 90)
    p_lng = (t_lng + rng.normal(0, 1, n) * scale + 180) % 360 - 180
    ids = [f"p{i}" for i in range(n)]
    report = evaluate(ids[::-1], ["CPlaNet[1-5]"] * n, p_lat[::-1], p_lng[::-1], ids, t_lat, t_lng)
    dist = great_circle_km(p_lat, p_lng, t_lat, t_lng)
    expected = [sum(1 for d in dist if d < r) / n for r in THRESHOLDS_KM]
    row = report["methods"]["CPlaNet[1-5]"]
    np.testing.assert_allclose(accuracy_values(row), expected)
    assert row["n"] == n and row["n_missing"] == 0
    assert row["median_km"] == pytest.approx(np.median(dist), rel=1e-6)


def test_average_rows_missing_photos_and_duplicates():
    truth_ids = ["a", "b", "c", "d"]
    t_lat, t_lng = [0.0, 0.0, 0.0, 0.0], [0.0, 10.0, 20.0, 30.0]
    rows = []
    # ClassSet 1 is exact on a, b, c; ClassSet 2 is 0.1 degree (~11 km) off on all four.
    for pid, lng in zip(truth_ids[:3], t_lng[:3]):
        rows.append((pid, "ClassSet 1", 0.0, lng))
    for pid, lng in zip(truth_ids, t_lng):
        rows.append((pid, "ClassSet 2", 0.1, lng))
        rows.append((pid, "CPlaNet[1-2]", 0.0, lng))
    rows.append(("zzz", "CPlaNet[1-2]", 0.0, 0.0))
    ids, methods, lat, lng = zip(*rows)
    report = evaluate(ids, methods, lat, lng, truth_ids, t_lat, t_lng)
    m = report["methods"]
    assert m["ClassSet 1"]["n"] == 3 and m["ClassSet 1"]["n_missing"] == 1
    assert m["CPlaNet[1-2]"]["n_without_truth"] == 1
    idx10, idx25 = THRESHOLDS_KM.index(10), THRESHOLDS_KM.index(25)
    set2 = accuracy_values(m["ClassSet 2"])
    assert set2[idx10] == 0.0 and set2[idx25] == 1.0
    assert m["ClassSet 2"]["accuracy"]["10"] == 0.0 and m["ClassSet 2"]["accuracy"]["25"] == 1.0
    np.testing.assert_allclose(
        accuracy_values(m["Average[1-2]"]),
        (np.array(accuracy_values(m["ClassSet 1"])) + accuracy_values(m["ClassSet 2"])) / 2,
    )
    with pytest.raises(ValueError, match="ground truth: photo_id 'a' appears 2 times"):
        evaluate(["a"], ["PlaNet"], [0], [0], ["a", "a"], [0, 0], [0, 0])


def test_method_names_round_trip():
    assert method_name(["set1", "set2", "set3", "set4", "set5"]) == "CPlaNet[1-5]"
    assert method_name(["set1", "set2", "set3", "set4", "set5", "planet"]) == "CPlaNet[1-5,PlaNet]"
    assert method_name(["set1", "set3", "set4"], SIMPLE_SUM) == "SimpleSum[1,3-4]"
    assert method_name(["planet"]) == "PlaNet" and method_name(["set4"]) == "ClassSet 4"
    names = [m.name for m in standard_methods(SETS)]
    assert names == ["ClassSet 1", "ClassSet 2", "ClassSet 3", "ClassSet 4", "ClassSet 5", "PlaNet",
                     "SimpleSum[1-5]", "CPlaNet[1-2]", "CPlaNet[1-5]", "CPlaNet[1-5,PlaNet]"]
    for method in standard_methods(SETS):
        parsed = parse_method(method.name, SETS)
        assert parsed.set_names == method.set_names and parsed.name == method.name
    assert parse_method("CPlaNet[1-3,PlaNet]", SETS).set_names == ("set1", "set2", "set3", "planet")
    assert parse_method("CPlaNet[1-3,PlaNet]", SETS).rule == NORMALIZED_SUM
    with pytest.raises(ValueError, match="needs geoclass sets \\['set6', 'set7'\\]"):
        parse_method("CPlaNet[1-7]", SETS)
    with pytest.raises(ValueError, match="unknown method 'Best'"):
        parse_method("Best", SETS)


def test_report_files_and_table_layout(tmp_path):
    rng = np.random.default_rng(1)
    ids = [str(i) for i in range(50)]
    t_lat, t_lng = rng.uniform(-60, 60, 50), rng.uniform(-180, 180, 50)
    pred = []
    for noise, method in ((5.0, "ClassSet 1"), (5.0, "ClassSet 2"), (0.5, "CPlaNet[1-2]"), (2.0, "PlaNet")):
        lat = np.clip(t_lat + rng.normal(0, noise, 50), -90, 90)
        pred += [(i, method, a, b) for i, a, b in zip(ids, lat, t_lng)]
    report = evaluate(*zip(*pred), ids, t_lat, t_lng)
    paths = write_report(report, str(tmp_path / "eval"))
    assert json.loads(open(paths["json"]).read())["methods"].keys() == report["methods"].keys()
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    lines = to_markdown(report).splitlines()
    rows = [line.split("|")[1].strip() for line in lines[4:]]
    assert rows == ["PlaNet", "ClassSet 1", "ClassSet 2", "Average[1-2]", "CPlaNet[1-2]"]
    best_2500 = max(report["methods"][r]["accuracy"]["2500"] for r in rows)
    assert f"**{best_2500 * 100:.1f}**" in open(paths["md"]).read()
