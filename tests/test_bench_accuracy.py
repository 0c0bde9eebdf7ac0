"""benchmarks.bench_accuracy's verdicts (outcome, ablation) on hand-made reports: the must-show booleans."""

from __future__ import annotations

import pytest

from benchmarks.bench_accuracy import KNN, SMOOTHED, ablation, outcome

THRESHOLDS = [1, 5, 10, 25, 50]


def _row(values, r50=None, r90=None):
    row = {"n": 100, "accuracy": {str(t): v for t, v in zip(THRESHOLDS, values)}}
    if r50 is not None:
        row.update(within_radius50=r50, within_radius90=r90)
    return row


def _report(refined, knn, r50=0.5, r90=0.9):
    methods = {
        "ClassSet 1": _row([0.05, 0.15, 0.20, 0.30, 0.40]),
        "ClassSet 2": _row([0.06, 0.14, 0.22, 0.31, 0.41]),
        "SimpleSum[1-2]": _row([0.08, 0.19, 0.27, 0.37, 0.45]),
        "CPlaNet[1-2]": _row([0.09, 0.20, 0.28, 0.36, 0.46], r50, r90),
        "CPlaNet[1-2]+R": _row(refined, 0.52, 0.91),
    }
    return {"thresholds_km": THRESHOLDS, "methods": methods}, _row(knn)


def test_refined_must_be_within_one_point_of_the_better_of_cplanet_and_knn_at_every_radius():
    report, knn = _report(refined=[0.195, 0.252, 0.28, 0.40, 0.455], knn=[0.20, 0.26, 0.27, 0.30, 0.30])
    table = ablation(report, None, knn)
    verdict = outcome(table)
    # 1 km: 19.5 vs kNN 20 (within 1); 5 km: 25.2 vs 26; 50 km: 45.5 vs CPlaNet 46.
    assert verdict["refined_within_1_point_of_best"] == {"1": True, "5": True, "10": True, "25": True, "50": True}
    report, knn = _report(refined=[0.185, 0.25, 0.28, 0.40, 0.44], knn=[0.20, 0.26, 0.27, 0.30, 0.30])
    verdict = outcome(ablation(report, None, knn))
    assert verdict["refined_within_1_point_of_best"]["1"] is False  # 18.5 < 20 - 1
    assert verdict["refined_within_1_point_of_best"]["50"] is False  # 44 < 46 - 1
    assert verdict["cplanet_beats_every_single_set"] == {"1": True, "5": True, "10": True, "25": True}
    assert verdict["normalizedsum_beats_simplesum"] == {"1": True, "5": True, "10": True, "25": False}


def test_radii_verdicts_and_smoothed_rows_in_the_ablation():
    report, knn = _report(refined=[0.2] * 5, knn=[0.2] * 5, r50=0.44, r90=0.96)
    smoothed, _ = _report(refined=[0.1] * 5, knn=[0.1] * 5)
    table = ablation(report, smoothed, knn)
    assert set(table["methods"]) >= {"CPlaNet[1-2]" + SMOOTHED, "CPlaNet[1-2]+R" + SMOOTHED, KNN}
    assert "ClassSet 1" + SMOOTHED not in table["methods"]  # only the combined rows are repeated
    verdict = outcome(table)
    assert verdict["radii_CPlaNet[1-2]"]["holds_45_55"] is False and verdict["radii_CPlaNet[1-2]"]["holds_85_95"] is False
    assert verdict["radii_CPlaNet[1-2]+R"]["holds_45_55"] is True and verdict["radii_CPlaNet[1-2]+R"]["holds_85_95"] is True


@pytest.mark.parametrize("module", ["bench_scale", "bench_geoclass", "bench_accuracy", "bench_training",
                                    "bench_geoclass_job", "bench_image_jobs", "bench_locate", "bench_bucketing"])
def test_a_benchmark_refuses_an_abbreviated_or_misspelt_flag_before_measuring(module, capsys):
    """`--size 1000` once ran bench_scale at 1,000 photos (argparse took it for --sizes) and recorded the run
    into bench/results.json; every benchmark now stops with exit status 2 and names the flag."""
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as stop:
        main(["--size", "1000"])
    assert stop.value.code == 2
    assert "unrecognized argument --size" in capsys.readouterr().err
