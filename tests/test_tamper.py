"""Artifacts are verified, not trusted: a file edited after its artifact was written is refused by every reader,
with one line naming the artifact and the file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.partitions import build_partitions, build_partitions_from_artifact, save_partitions
from pipelines import batch_predict, make_examples
from schemas.artifacts import ArtifactChecksumError, IncompleteArtifactError, write_marker
from schemas.cli import run_command
from tests.test_batch_predict import make_model, write_manifest
from tests.test_make_examples import _cell, _write_photos, _write_sets
from tests.test_partitions import random_sets


def _edit_parquet(path):
    """Change one value, keep the schema: what a hand edit of an artifact file looks like."""
    table = pq.read_table(path)
    column = table.column_names[-1]
    values = table.column(column).to_numpy().copy()
    values[0] = values[0] + 1
    table = table.set_column(table.column_names.index(column), column, pa.array(values))
    pq.write_table(table, path)


def test_an_edited_assignments_file_is_refused_by_partitions_and_examples(tmp_path, capsys):
    rng = np.random.default_rng(1)
    lat, lng = rng.uniform(35, 36, 50), rng.uniform(139, 140, 50)
    rows = [(f"p{i}", float(lat[i]), float(lng[i]), _cell(lat[i], lng[i])) for i in range(50)]
    _write_photos(tmp_path / "photos", rows, rng.normal(size=(50, 8)).astype(np.float32))
    cells = np.unique([r[3] for r in rows]).astype(np.uint64)
    labels = np.stack([np.arange(len(cells)) % 3, np.arange(len(cells)) % 2], axis=1)
    sets = tmp_path / "sets"
    _write_sets(sets, cells, labels)
    table = pq.read_table(sets / "assignments.parquet")
    xyz = rng.normal(size=(len(cells), 3))
    for i, name in enumerate(("x_sum", "y_sum", "z_sum")):
        table = table.append_column(name, pa.array(xyz[:, i]))
    pq.write_table(table, sets / "assignments.parquet")
    write_marker(str(sets))  # as every writer does: the marker records each file's checksum
    build_partitions_from_artifact(str(sets))  # untouched: accepted

    _edit_parquet(sets / "assignments.parquet")
    with pytest.raises(ArtifactChecksumError, match="geoclass sets .*sets: assignments.parquet changed"):
        build_partitions_from_artifact(str(sets))
    status = run_command(make_examples.run, [f"--photos={tmp_path / 'photos'}", f"--geoclass_sets={sets}",
                                             f"--output={tmp_path / 'examples'}"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "geoclass sets" in err and "assignments.parquet changed" in err
    assert not (tmp_path / "examples").exists()


@pytest.fixture()
def predict_inputs(tmp_path):
    assignments, n_images, xyz_sum = random_sets(11, n_nodes=200, ks=(5, 9, 14))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-T")
    save_partitions(parts, str(tmp_path / "partitions"))
    make_model(str(tmp_path / "model"), parts.set_names, parts.n_classes, "sets-T")
    write_manifest(tmp_path / "m.parquet", 4, seed=1)
    return tmp_path, ["--manifest", str(tmp_path / "m.parquet"), "--model", str(tmp_path / "model"), "--partitions",
                      str(tmp_path / "partitions"), "--output", str(tmp_path / "out"), "--direct_num_workers=1"]


def test_batch_predict_refuses_edited_partitions_or_model(predict_inputs, capsys):
    root, argv = predict_inputs
    _edit_parquet(root / "partitions" / "partitions.parquet")
    assert run_command(batch_predict.run, argv) == 1
    err = capsys.readouterr().err
    assert "partitions" in err and "partitions.parquet changed" in err and "Traceback" not in err
    save_partitions(build_partitions(*random_sets(11, n_nodes=200, ks=(5, 9, 14)), sets_checksum="sets-T"),
                    str(root / "partitions"))
    manifest = json.loads((root / "model" / "manifest.json").read_text())
    manifest["n_classes"] = {k: v for k, v in manifest["n_classes"].items()}
    (root / "model" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert run_command(batch_predict.run, argv) == 1
    err = capsys.readouterr().err
    assert "model" in err and "manifest.json changed" in err and "Traceback" not in err
    assert not (root / "out").exists()


def test_a_model_export_killed_before_its_marker_is_refused(predict_inputs):
    from trainer.export import read_manifest

    root, argv = predict_inputs
    (root / "model" / "_SUCCESS").unlink()  # the export died after its files, before the marker
    with pytest.raises(IncompleteArtifactError, match="model .*no _SUCCESS"):
        read_manifest(str(root / "model"))
    with pytest.raises(IncompleteArtifactError, match="model .*no _SUCCESS"):
        batch_predict.read_model_manifest(str(root / "model"))
