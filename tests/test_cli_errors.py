"""User mistakes end in one line on stderr naming the file or flag, exit status 2 (usage) or 1 (data), no traceback.

Most commands run in-process through ``schemas.cli.run_command`` (what every ``__main__`` calls); the flag typos
of the issue also run as real ``python -m`` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partition_gen.partitions import build_partitions, save_partitions
from pipelines import batch_predict, bucket_cells, make_examples, run_all
from schemas import columns as c
from schemas.cli import run_command
from tests.test_batch_predict import make_model, write_manifest
from tests.test_partitions import random_sets

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ["--direct_num_workers=1"]


def _one_line(capsys, status, want_status, *needles):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert status == want_status, err
    assert "Traceback" not in err
    assert len(lines) <= 2, err  # argparse prints its usage line before the error line
    for needle in needles:
        assert needle in lines[-1], (needle, err)
    return lines[-1]


def _features(path, n=5, dim=4, drop=()):
    rng = np.random.default_rng(0)
    columns = {
        c.PHOTO_ID: [f"p{i}" for i in range(n)],
        c.LAT: rng.uniform(-50, 50, n),
        c.LNG: rng.uniform(-50, 50, n),
        c.EMBEDDING: pa.array(list(rng.normal(size=(n, dim)).astype(np.float32)), type=pa.list_(pa.float32())),
    }
    pq.write_table(pa.table({k: v for k, v in columns.items() if k not in drop}), path)
    return str(path)


@pytest.fixture(scope="module")
def predict_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assignments, n_images, xyz_sum = random_sets(11, n_nodes=200, ks=(5, 9, 14))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-T")
    save_partitions(parts, str(root / "partitions"))
    make_model(str(root / "model"), parts.set_names, parts.n_classes, "sets-T")
    make_model(str(root / "other_model"), parts.set_names, parts.n_classes, "sets-OTHER")
    write_manifest(root / "m.parquet", 4, seed=1)
    return root


def test_missing_empty_and_columnless_inputs_name_the_file(tmp_path, capsys):
    out = f"--output={tmp_path / 'out'}"
    status = run_command(bucket_cells.run, [f"--features={tmp_path / 'nope.parquet'}", out, *RUNNER])
    _one_line(capsys, status, 1, "nope.parquet", "does not exist")
    (tmp_path / "empty.csv").write_text("")
    status = run_command(bucket_cells.run, [f"--features={tmp_path / 'empty.csv'}", out, *RUNNER])
    _one_line(capsys, status, 1, "empty.csv")
    no_lng = _features(tmp_path / "no_lng.parquet", drop=(c.LNG,))
    status = run_command(bucket_cells.run, [f"--features={no_lng}", out, *RUNNER])
    _one_line(capsys, status, 1, "--features", "no_lng.parquet", "lng")
    assert not (tmp_path / "out").exists()


def test_wrong_embedding_size_and_mismatched_artifacts(predict_artifacts, tmp_path, capsys):
    root = predict_artifacts
    base = ["--partitions", str(root / "partitions"), "--output", str(tmp_path / "p"), *RUNNER]
    wrong = _features(tmp_path / "wrong_dim.parquet", dim=3)
    status = run_command(batch_predict.run, ["--manifest", wrong, "--model", str(root / "model"), *base])
    _one_line(capsys, status, 1, "wrong_dim.parquet", "3 values", "takes 8")
    manifest = str(root / "m.parquet")
    status = run_command(batch_predict.run, ["--manifest", manifest, "--model", str(root / "other_model"), *base])
    _one_line(capsys, status, 1, "other_model", "sets-OTHER")


def test_unknown_flags_name_the_nearest_valid_flag(predict_artifacts, tmp_path, capsys):
    status = run_command(bucket_cells.run, ["--features=x", "--output=y", "--cell-shards=3"])
    _one_line(capsys, status, 2, "--cell-shards", "did you mean --cell_shards?")
    status = run_command(bucket_cells.run, ["--features=x", "--output=y", "--direct_num_worker=2"])
    _one_line(capsys, status, 2, "did you mean --direct_num_workers?")
    status = run_command(make_examples.run, ["--photos=x", "--geoclass_sets=y", "--output=z", "--eval_fration=0.2"])
    _one_line(capsys, status, 2, "did you mean --eval_fraction?")


def test_run_all_config_mistakes(tmp_path, capsys):
    train = _features(tmp_path / "train.parquet")
    base = ["--train", train, "--test", train, "--workdir", str(tmp_path / "work")]
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"classes_per_sett": 5}))
    status = run_command(run_all.run, [*base, "--config", str(config)])
    _one_line(capsys, status, 2, "cfg.json", "classes_per_sett", "did you mean classes_per_set?")
    status = run_command(run_all.run, [*base, "--config", str(tmp_path / "missing.json")])
    _one_line(capsys, status, 2, "--config", "missing.json")
    # A work dir built with other settings, resumed: says what to do.
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "run_config.json").write_text(json.dumps({"classes_per_set": 99}))
    config.write_text(json.dumps({"classes_per_set": 5}))
    status = run_command(run_all.run, [*base, "--config", str(config), "--resume"])
    _one_line(capsys, status, 2, "classes_per_set: 99 -> 5", "use a new --workdir")
    status = run_command(run_all.run, ["--train", str(tmp_path / "nope.parquet"), "--test", train, "--workdir",
                                       str(tmp_path / "w2")])
    _one_line(capsys, status, 1, "nope.parquet")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(train).slice(0, 0), empty)
    status = run_command(run_all.run, ["--train", str(empty), "--test", train, "--workdir", str(tmp_path / "w3")])
    _one_line(capsys, status, 1, "--train", "empty.parquet", "no rows")


def _python_m(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_flag_typos_through_python_m(predict_artifacts, tmp_path):
    root = predict_artifacts
    done = _python_m("pipelines.batch_predict", "--manifest", str(root / "m.parquet"), "--model",
                     str(root / "model"), "--partitions", str(root / "partitions"), "--output",
                     str(tmp_path / "p"), "--run-date", "2026-11-25", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--run-date; did you mean --run_date?" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p").exists()
    done = _python_m("pipelines.run_all", "--train", "t.parquet", "--test", "t.parquet", "--workdir", "w",
                     "--confg", "cfg.json", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--confg; did you mean --config?" in done.stderr and "Traceback" not in done.stderr
    # A data error through python -m: one line, status 1; the traceback only with --debug.
    done = _python_m("pipelines.bucket_cells", "--features", "nope.parquet", "--output", "o", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [ln for ln in done.stderr.splitlines() if "nope.parquet" in ln]
    done = _python_m("pipelines.bucket_cells", "--features", "nope.parquet", "--output", "o", "--debug", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_a_misspelt_required_flag_is_named_not_reported_missing(capsys):
    from pipelines import ingest_photos

    # argparse checks required flags first: without the fix this said only "required: --photos".
    status = run_command(ingest_photos.run, ["--photo", "x", "--output", "y"])
    _one_line(capsys, status, 2, "unrecognized argument --photo; did you mean --photos?")
    # A flag for Beam next to a truly missing one: the missing one is named.
    status = run_command(ingest_photos.run, ["--output", "y", "--runner", "DirectRunner"])
    _one_line(capsys, status, 2, "required: --photos")


def test_every_command_main_goes_through_schemas_cli():
    """Each ``python -m`` entry point maps errors to one line and an exit status (locate has its own statuses).

    build_refine_index, trainer.train, draw_figure4, draw_predictions_map and demo used to call ``run()`` bare:
    a missing artifact printed a traceback and argparse's usage block.
    """
    import ast

    for path in [*ROOT.glob("pipelines/*.py"), *ROOT.glob("trainer/*.py"), *ROOT.glob("partition_gen/*.py")]:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                body = ast.unparse(node)
                if path.stem == "locate":
                    assert "sys.exit(main())" in body
                else:
                    assert "from schemas.cli import main" in body, f"{path}: {body}"
                    assert f"'{path.parent.name}.{path.stem}'" in body, f"{path}: {body}"


def test_build_refine_index_and_train_name_the_missing_artifact(tmp_path, capsys):
    from pipelines import build_refine_index
    from trainer import train

    nope = str(tmp_path / "nope")
    status = run_command(build_refine_index.run, ["--examples", nope, "--model", nope, "--partitions", nope])
    _one_line(capsys, status, 1, "nope", "_SUCCESS")
    status = run_command(train.run, ["--examples", nope, "--sets", nope, "--job_dir", str(tmp_path / "job")])
    _one_line(capsys, status, 1, "nope", "_SUCCESS")
    status = run_command(train.run, ["--exmaples", nope, "--sets", nope, "--job_dir", str(tmp_path / "job")])
    _one_line(capsys, status, 2, "--exmaples; did you mean --examples?")


def test_locate_on_a_features_only_model_says_to_use_features(predict_artifacts, tmp_path):
    import io

    from pipelines import locate

    photo = sorted((ROOT / "data" / "photos").glob("*.jpg"))[0]
    out, err = io.StringIO(), io.StringIO()
    code = locate.main([str(photo), "--model", str(predict_artifacts / "model"), "--partitions",
                        str(predict_artifacts / "partitions"), "--allow_random_backbone"], out=out, err=err)
    lines = err.getvalue().splitlines()
    assert code == 2 and out.getvalue() == "" and len(lines) == 1, lines
    assert "geolocator.keras" in lines[0] and "use --features FILE" in lines[0]


def test_locate_with_nothing_to_locate_stops_before_loading_the_model(predict_artifacts, tmp_path, monkeypatch):
    import io

    from pipelines import locate

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although there is nothing to locate")

    monkeypatch.setattr(locate, "Locator", no_model)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no photos here")
    model = ["--model", str(predict_artifacts / "model"), "--partitions", str(predict_artifacts / "partitions")]
    cases = [
        ([str(tmp_path / "empty")], ["empty: the folder holds no image files"]),
        ([str(tmp_path / "notes")], ["notes: the folder holds no image files", "skipped 1 file(s)"]),
        ([str(tmp_path / "gone.jpg"), str(tmp_path / "*.heic")],
         ["gone.jpg: no such file or folder", "*.heic: no file matches this pattern"]),
        (["--features", str(tmp_path / "gone.parquet")], [f"--features {tmp_path / 'gone.parquet'}: no such file"]),
        (["--features", str(tmp_path / "empty")], [f"--features {tmp_path / 'empty'}: table"]),
    ]
    for args, wanted in cases:
        out, err = io.StringIO(), io.StringIO()
        assert locate.main([*args, *model], out=out, err=err) == 2, err.getvalue()
        lines = err.getvalue().splitlines()
        assert out.getvalue() == "" and len(lines) == len(wanted), lines
        for line, needle in zip(lines, wanted):
            assert line.startswith("locate: error: ") and needle in line, (needle, lines)


LOCATE_WITHOUT_TENSORFLOW = """
import io, sys
from pipelines import locate
err = io.StringIO()
code = locate.main(sys.argv[1:], out=io.StringIO(), err=err)
print(code, "tensorflow" in sys.modules, err.getvalue().strip(), sep="|")
"""


def test_locate_names_the_flag_of_a_missing_or_wrong_artifact_before_tensorflow_loads(predict_artifacts, tmp_path):
    photo = str(sorted((ROOT / "data" / "photos").glob("*.jpg"))[0])
    from schemas.artifacts import write_marker

    (tmp_path / "sets").mkdir()  # e.g. the geoclass sets given as partitions: complete, but no manifest.json
    (tmp_path / "sets" / "sets.json").write_text("{}")
    write_marker(str(tmp_path / "sets"))
    model, parts = str(predict_artifacts / "model"), str(predict_artifacts / "partitions")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, needle in [
        (["--model", model, "--partitions", str(tmp_path / "sets")], f"--partitions {tmp_path / 'sets'}: manifest.json"),
        (["--model", str(tmp_path / "nope"), "--partitions", parts], f"model {tmp_path / 'nope'}: no manifest.json"),
        (["--model", str(predict_artifacts / "other_model"), "--partitions", parts], "sets-OTHER"),
    ]:
        done = subprocess.run([sys.executable, "-c", LOCATE_WITHOUT_TENSORFLOW, photo, *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        code, tensorflow_loaded, message = done.stdout.strip().split("|")
        assert (code, tensorflow_loaded) == ("2", "False"), done.stdout + done.stderr
        assert message.startswith("locate: error: ") and needle in message and "\n" not in message, message


def test_locate_knows_the_geolocator_file_name_of_the_export():
    from pipelines import locate
    from trainer import export

    assert locate.GEOLOCATOR_FILE == export.GEOLOCATOR_FILE


def test_demo_refuses_an_unknown_flag_and_a_bare_missing_path_says_what_is_wrong(capsys):
    from pipelines import demo

    # Used to pass --n-train on to the Beam stages and run the whole 40,000-photo demo.
    status = run_command(demo.run, ["--n-train", "5"])
    _one_line(capsys, status, 2, "--n-train; did you mean --n_train?")

    def missing(argv):
        raise FileNotFoundError("nope.parquet")  # as schemas.io.list_table_files raises it

    status = run_command(missing, [], prog="draw_figure4")
    _one_line(capsys, status, 1, "draw_figure4: nope.parquet: no such file or directory")
