"""The Flex Template metadata is held equal to the job's one declaration of its flags."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import batch_predict

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "batch_predict_metadata.json"


def test_batch_predict_metadata_lists_exactly_the_jobs_flags():
    parameters = {p["name"]: p for p in json.loads(TEMPLATE.read_text())["parameters"]}
    actions = {a.dest: a for a in batch_predict.parser()._actions if a.dest != "help"}
    assert sorted(parameters) == sorted(actions)
    for name, action in actions.items():
        assert parameters[name]["isOptional"] is (not action.required), name
        assert parameters[name]["helpText"] and parameters[name]["label"], name
