"""`make demo` fits one screen: stage lines, the accuracy table once, then where everything was written."""

from __future__ import annotations

import logging

import numpy as np

from partition_gen.evaluation import THRESHOLDS_KM, accuracy_dict
from pipelines import demo

METHODS = ["PlaNet"] + [f"ClassSet {i}" for i in range(1, 6)] + [
    "Average[1-5]", "SimpleSum[1-5]", "CPlaNet[1-2]", "CPlaNet[1-3]", "CPlaNet[1-4]", "CPlaNet[1-5]",
    "CPlaNet[1-5,PlaNet]",
]


def _fake_run(workdir):
    """The files a demo run leaves (more maps than are listed)."""
    files = ["run/evaluation.md", "run/evaluation.json", "run/accuracy.png", "run/figure4_123_N00.png",
             "run/train/curves.png", "sample/feature_model.png", "demo.log"]
    files += [f"run/sets/maps/set{i}.png" for i in range(1, 9)]
    for name in files:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_demo_console_is_one_screen_and_ends_with_where_everything_is(tmp_path, capsys):
    _fake_run(tmp_path)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        demo._console_and_log(str(tmp_path / "demo.log"))
        stages = logging.getLogger(demo.STAGE_LOGGER)
        for i in range(1, 8):
            stages.info("[%d/7] stage %d ...", i, i)
            for j in range(30):  # what the jobs and the trainer log at INFO
                logging.getLogger("pipelines.common").info("bucket_cells: rows in %d", j)
                logging.getLogger("trainer.train").info("epoch %d/20 done", j)
            stages.info("[%d/7] stage %d done in 1.0 s", i, i)
        stages.info("run config (scaled to 40000 training rows): {...}")
        logging.getLogger("apache_beam").warning("a real warning")
        report = {"thresholds_km": list(THRESHOLDS_KM),
                  "methods": {m: {"n": 2997, "accuracy": accuracy_dict(np.linspace(0.01, 0.6, 9), THRESHOLDS_KM)}
                              for m in METHODS}}
        print("\n".join(demo.final_lines(report, "Demo -- accuracies [%]", str(tmp_path), 123.0)))
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    captured = capsys.readouterr()
    console = (captured.err + captured.out).rstrip("\n").splitlines()
    assert len(console) <= 60, "\n".join(console)
    assert sum("| Models |" in line for line in console) == 1
    assert sum("done in" in line for line in console) == 7
    assert any("a real warning" in line for line in console)
    assert not any("rows in" in line or "epoch" in line for line in console)
    # The end says where everything was written, with the full log last.
    tail = console[-7:]
    assert console[-8].startswith("Finished in 123 s. Written under ")
    assert [line.split(":")[0].strip() for line in tail] == [
        "accuracy table", "accuracy plot", "Figure 4 for one photo", "geoclass-set maps", "training curves",
        "feature model", "full log"]
    assert "... 2 more" in tail[3]
    # The details are kept in the log file.
    log = (tmp_path / "demo.log").read_text()
    assert "bucket_cells: rows in 29" in log and "epoch 29/20 done" in log
