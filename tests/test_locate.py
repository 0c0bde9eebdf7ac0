"""pipelines.locate on real photos: one line per file, places, exit statuses, random-backbone refusal, and the
same features as extract_features and the exported geolocator's backbone."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partition_gen.partitions import build_partitions, read_partitions_manifest, save_partitions
from pipelines import locate
from tests.test_partitions import random_sets

REPO = Path(__file__).resolve().parent.parent
PHOTO_DIRS = (REPO / "data" / "photos", REPO.parent / "shared" / "data" / "photos", Path("/work/shared/data/photos"))


def photos_dir() -> Path:
    """The real EXIF test photos: bundled in data/photos, else the shared copy beside the repo."""
    for path in PHOTO_DIRS:
        if path.is_dir() and any(p.suffix.lower() in locate.IMAGE_EXTENSIONS for p in path.iterdir()):
            return path
    pytest.skip("no real photos: neither data/photos nor ../shared/data/photos exists")


def pillow_decodes(path: Path) -> bool:
    """Independent of imagery: does Pillow (with the HEIF plugin) decode the whole file?"""
    from PIL import Image

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    try:
        with Image.open(path) as image:
            if image.width * image.height > 200_000_000:
                return False
            image.load()
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, backbone_path):
    """A model artifact with a random-weight Inception v3 backbone (cloned from the session's backbone file,
    freshly initialised, so the manifest says ``random``) and its partitions."""
    import keras

    from trainer.backbone import FEATURE_DIM
    from trainer.export import export_model
    from trainer.model import build_model

    root = tmp_path_factory.mktemp("locate")
    assignments, n_images, xyz_sum = random_sets(4, n_nodes=400, ks=(6, 9, 15))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="sets-L")
    save_partitions(parts, str(root / "partitions"))
    n_classes = dict(zip(parts.set_names, parts.n_classes))
    keras.utils.set_random_seed(3)
    heads = build_model(FEATURE_DIM, n_classes, seed=3)
    # Random-weight features are small and alike: large kernels make the photos' class distributions differ.
    rng = np.random.default_rng(3)
    for name in n_classes:
        kernel, bias = heads.get_layer(name).get_weights()
        heads.get_layer(name).set_weights([rng.normal(0, 30, kernel.shape).astype(np.float32), bias])
    binding = read_partitions_manifest(str(root / "partitions"))
    manifest = export_model(heads, str(root / "model"), binding, backbone=str(backbone_path), backbone_weights="random")
    assert manifest["backbone"]["weights"] == "random"
    return {"root": root, "model": str(root / "model"), "partitions": str(root / "partitions"), "parts": parts}


def run_locate(args, artifacts, *extra):
    out, err = io.StringIO(), io.StringIO()
    code = locate.main([*map(str, args), "--model", artifacts["model"], "--partitions", artifacts["partitions"],
                        *map(str, extra)], out=out, err=err)  # fmt: skip
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def extra_photos(tmp_path_factory):
    """Two generated JPEGs, a text file named .jpg and a path that does not exist."""
    from PIL import Image

    root = tmp_path_factory.mktemp("extra")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(640, 480), (90, 300)]):
        path = root / f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    (root / "notes.jpg").write_text("not a photo")
    return paths, root / "notes.jpg", root / "gone.jpg"


@pytest.fixture(scope="module")
def folder_run(artifacts, extra_photos):
    """One locate run (the model loaded once) on the real photos folder plus the extra files."""
    good, text, missing = extra_photos
    code, out, err = run_locate([photos_dir(), *good, text, missing], artifacts, "--json", "--allow_random_backbone",
                                "--top_k", "3")  # fmt: skip
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture(scope="module")
def geolocator(artifacts):
    from trainer.export import load_geolocator

    return load_geolocator(artifacts["model"], read_partitions_manifest(artifacts["partitions"]))


def test_locate_the_photos_folder_one_json_line_per_file(folder_run, extra_photos):
    folder = photos_dir()
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in locate.IMAGE_EXTENSIONS)
    code, lines, err = folder_run
    good, text, missing = extra_photos
    lines_of_folder = [r for r in lines if Path(r["photo"]).parent == folder]
    assert sorted(r["photo"] for r in lines_of_folder) == sorted(str(p) for p in images)  # one line per image file
    failed = {r["photo"] for r in lines_of_folder if "error" in r}
    # Error lines only for files that do not decode: every file Pillow decodes on its own is located.
    decodable = {str(p) for p in images if pillow_decodes(p)}
    assert not failed & decodable, failed & decodable
    assert len(failed) <= 3 and len(decodable) >= len(images) - 3
    for r in lines_of_folder:
        if "error" in r:
            assert set(r) == {"photo", "error"} and r["error"]
            continue
        assert -90 <= r["lat"] <= 90 and -180 <= r["lng"] <= 180 and r["score"] > 0
        assert r["place"]["name"] and r["place"]["country_code"] and r["place"]["city"]
        assert 1 <= len(r["topk"]) <= 3 and all(alt["place"] for alt in r["topk"])
        assert r["topk"][0]["score"] == pytest.approx(r["score"])
    # The extra files: the text file and the missing path are error lines, so the exit status is 1.
    by_name = {Path(r["photo"]).name: r for r in lines if Path(r["photo"]).parent != folder}
    assert set(by_name) == {"p0.jpg", "p1.jpg", "notes.jpg", "gone.jpg"}
    assert "error" in by_name["notes.jpg"] and "no such file" in by_name["gone.jpg"]["error"]
    assert "error" not in by_name["p0.jpg"] and "error" not in by_name["p1.jpg"]
    assert code == 1
    # stderr: the random-backbone warning once, then one line per failure naming the file.
    err_lines = err.splitlines()
    assert sum("random weights" in line for line in err_lines) == 1
    for photo in failed | {str(text), str(missing)}:
        assert sum(line.startswith(f"locate: {photo}: ") for line in err_lines) == 1
    has_other_files = any(p.is_file() and p.suffix.lower() not in locate.IMAGE_EXTENSIONS for p in folder.iterdir())
    assert any("skipped" in line for line in err_lines) == has_other_files
    assert len(err_lines) == 1 + len(failed) + 2 + has_other_files


def test_precomputed_features_text_output_and_exit_0(artifacts, tmp_path):
    """--features: the heads on stored embeddings; all good -> exit 0, a bad row -> its own error line, exit 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from partition_gen.evaluation import default_method
    from schemas import columns as c
    from trainer.export import load_features_model

    rng = np.random.default_rng(1)
    embeddings = rng.uniform(0, 1, (3, 2048)).astype(np.float32)
    pq.write_table(pa.table({c.PHOTO_ID: ["a", "b", "c"], c.EMBEDDING: list(embeddings)}), tmp_path / "good.parquet")
    code, out, err = run_locate([], artifacts, "--features", tmp_path / "good.parquet", "--allow_random_backbone",
                                "--top_k", "2")  # fmt: skip
    assert code == 0
    lines = out.splitlines()  # one line per photo and one per alternative
    assert len(lines) == 6 and lines[0].startswith("a: ") and lines[1].startswith("    2. ")
    assert len(err.splitlines()) == 1 and "random weights" in err
    parts = artifacts["parts"]
    probs = load_features_model(artifacts["model"], read_partitions_manifest(artifacts["partitions"])).predict(
        embeddings, verbose=0
    )
    pred = default_method(parts.set_names).combiner(parts, 2).predict(probs)
    assert lines[0].startswith(f"a: {pred.lat[0]:.5f}, {pred.lng[0]:.5f}  ")

    bad = list(embeddings[:1]) + [np.full(2048, np.nan, np.float32), np.zeros(7, np.float32)]
    pq.write_table(pa.table({c.PHOTO_ID: ["a", "nan", "short"], c.EMBEDDING: bad}), tmp_path / "bad.parquet")
    code, out, err = run_locate([], artifacts, "--features", tmp_path / "bad.parquet", "--allow_random_backbone",
                                "--json")  # fmt: skip
    rows = {r["photo"]: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and set(rows) == {"a", "nan", "short"} and "lat" in rows["a"]
    assert "nan_embedding" in rows["nan"]["error"] and "bad_embedding_length" in rows["short"]["error"]
    assert len(err.splitlines()) == 3


def test_located_photos_match_the_combiner_and_the_gazetteer(artifacts, folder_run, extra_photos, geolocator):
    """The JSON lines equal imagery.load_image -> the exported geolocator -> combiner -> places, run directly."""
    from imagery import load_image
    from partition_gen.evaluation import default_method
    from partition_gen.places import nearest_places

    paths = extra_photos[0]
    rows = {r["photo"]: r for r in folder_run[1]}
    images = np.stack([load_image(p.read_bytes()) for p in paths])
    probs = geolocator.predict(images, verbose=0)
    parts = artifacts["parts"]
    pred = default_method(parts.set_names).combiner(parts, 3).predict(probs)
    places = nearest_places(pred.lat, pred.lng).names()
    for i, path in enumerate(paths):
        row = rows[str(path)]
        assert (row["lat"], row["lng"]) == (pytest.approx(pred.lat[i], abs=1e-5), pytest.approx(pred.lng[i], abs=1e-5))
        assert row["place"]["name"] == places[i]
        assert [a["partition_id"] for a in row["topk"]] == pred.topk_ids[i].tolist()


def test_random_backbone_is_refused_in_one_line_and_usage_errors_exit_2(artifacts, tmp_path):
    folder = photos_dir()
    code, out, err = run_locate([folder], artifacts, "--json")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "random weights" in err and "--allow_random_backbone" in err

    code, out, err = run_locate([folder], {**artifacts, "model": str(tmp_path / "nope")}, "--allow_random_backbone")
    assert code == 2 and len(err.splitlines()) == 1 and "nope" in err
    # Wrong partitions for the model: refused naming both checksums.
    other = random_sets(5, n_nodes=100, ks=(6, 9, 15))
    save_partitions(build_partitions(*other, sets_checksum="sets-OTHER"), str(tmp_path / "other"))
    code, _, err = run_locate([folder], {**artifacts, "partitions": str(tmp_path / "other")}, "--allow_random_backbone")
    assert code == 2 and "sets-OTHER" in err and "sets-L" in err and len(err.splitlines()) == 1


def test_the_command_line_with_a_typo_and_from_another_directory(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    typo = subprocess.run([sys.executable, "-m", "pipelines.locate", "x.jpg", "--modle", "m", "--partitions", "p"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
    assert typo.returncode == 2 and typo.stdout == "" and "Traceback" not in typo.stderr
    # One line naming the misspelt flag (argparse alone said "required: --model").
    assert typo.stderr.splitlines() == [
        "pipelines.locate: unrecognized argument --modle; did you mean --model? (required: --model) (see --help)"]
    nothing = subprocess.run([sys.executable, "-m", "pipelines.locate", "--model", "m", "--partitions", "p"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)  # fmt: skip
    assert nothing.returncode == 2 and "give photo PATHs or --features FILE" in nothing.stderr


def test_features_of_extract_features_the_geolocator_and_locate_agree(artifacts, geolocator, tmp_path):
    """The same backbone (the exported geolocator's own) on the real photos, three ways, within 1e-4."""
    import keras
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import extract_features
    from schemas import columns as c
    from schemas.io import read_table
    folder = photos_dir()
    files = [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".heic", ".heif", ".tiff")]
    files = [f for f in files if pillow_decodes(Path(f))][:8] + [f for f in files if f.lower().endswith((".heic", ".heif", ".tiff"))][:2]
    files = list(dict.fromkeys(files))

    set_name = artifacts["parts"].set_names[0]
    backbone = keras.Model(geolocator.input, geolocator.get_layer(set_name).input)
    backbone_file = tmp_path / "exported_backbone.keras"
    backbone.save(backbone_file)

    # 1. extract_features (Beam, RunInference) with the geolocator's backbone saved on its own.
    ids = [f"photo{i}" for i in range(len(files))]
    pq.write_table(pa.table({c.PHOTO_ID: ids, c.LAT: [0.0] * len(files), c.LNG: [0.0] * len(files),
                             c.IMAGE_URI: files}), tmp_path / "manifest.parquet")  # fmt: skip
    extract_features.run(["--manifest", str(tmp_path / "manifest.parquet"), "--output", str(tmp_path / "features"),
                          "--backbone_model", str(backbone_file), "--runner=DirectRunner",
                          "--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip
    table = read_table(str(tmp_path / "features"))
    by_id = dict(zip(table.column(c.PHOTO_ID).to_pylist(), table.column(c.EMBEDDING).to_pylist()))
    from_extract = np.array([by_id[i] for i in ids], dtype=np.float32)

    # 2. The exported geolocator's backbone part on locate's decoding, and 3. locate's own batches.
    locator = locate.Locator(artifacts["model"], artifacts["partitions"], allow_random_backbone=True)
    from_locate, from_geolocator = [], []
    for _photos, images, failures in locate.decoded_batches(files, batch_size=4):
        assert not failures
        features, _ = locator.run(images)
        from_locate.append(features)
        from_geolocator.append(backbone.predict(images, verbose=0))
    from_locate, from_geolocator = np.concatenate(from_locate), np.concatenate(from_geolocator)

    assert from_extract.shape == from_locate.shape == (len(files), 2048)
    # A random-weight Inception gives features of ~1e-3, so 1e-4 absolute would pass almost anything: the
    # tolerance is 1e-4 of the features' own scale (stricter than 1e-4 absolute for features below 1).
    scale = float(np.abs(from_geolocator).max())
    assert np.abs(from_extract - from_geolocator).max() <= 1e-4 * scale
    assert np.abs(from_locate - from_geolocator).max() <= 1e-4 * scale
    # Not trivially equal: different photos give clearly different features ...
    assert np.abs(from_locate - from_locate.mean(axis=0)).max() > 0.05 * scale
    # ... and the check has the power to see another preprocessing: the old in-model tf.image.resize of the
    # decoded photo moves the features by far more than the tolerance.
    import tensorflow as tf
    from PIL import Image, ImageOps

    big = max(range(len(files)), key=lambda i: os.path.getsize(files[i]))  # a large photo: resizing matters
    with Image.open(files[big]) as image:
        pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float32)
    resized = tf.image.resize(pixels[None], (299, 299)).numpy()
    assert np.abs(backbone.predict(resized, verbose=0)[0] - from_geolocator[big]).max() > 10 * 1e-4 * scale
