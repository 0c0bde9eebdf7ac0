"""run_all from image manifests (what ingest_photos writes): the backbone is built once, features are extracted
first, the exported geolocator holds that backbone, and locate then places a new photo with the run's model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from pipelines import locate, run_all
from schemas.io import read_table

CITIES = [(48.86, 2.35), (-33.87, 151.21), (40.71, -74.01), (35.69, 139.69), (-1.29, 36.82), (55.76, 37.62)]


def write_photos(folder, n, seed):
    """n small JPEGs of mixed sizes near six cities; the image manifest rows (photo_id, lat, lng, image_uri)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        lat, lng = CITIES[i % len(CITIES)]
        lat, lng = lat + rng.normal(0, 0.5), lng + rng.normal(0, 0.5)
        size = (int(rng.integers(40, 160)), int(rng.integers(40, 160)))
        # A colour per city, so even a tiny random backbone gives the cities different features.
        tint = np.array([(i % len(CITIES)) * 40 % 256, 255 - (i % len(CITIES)) * 40, 128])
        pixels = np.clip(tint + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=85)
        rows.append((f"{folder.name}-{i}", lat, lng, str(path)))
    return rows


def write_manifest(path, rows):
    path.write_text("photo_id,lat,lng,image_uri\n" + "".join(f"{p},{a:.6f},{b:.6f},{u}\n" for p, a, b, u in rows))
    return path


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, tiny_backbone_path):
    root = tmp_path_factory.mktemp("run_all_images")
    train = write_manifest(root / "train.csv", write_photos(root / "train", 60, seed=1))
    test = write_manifest(root / "test.csv", write_photos(root / "test", 12, seed=2))
    config = root / "config.json"
    config.write_text(json.dumps({"classes_per_set": 4, "n_sampled_sets": 1, "epochs": 2, "planet": False,
                                  "batch_size": 16, "methods": "default"}))  # fmt: skip
    workdir = root / "work"
    report = run_all.run(["--train", str(train), "--test", str(test), "--workdir", str(workdir), "--config",
                          str(config), "--backbone", str(tiny_backbone_path), "--backbone_weights", "random"])
    return {"root": root, "workdir": workdir, "report": report}


@pytest.mark.slow
def test_image_manifests_are_extracted_first_and_the_model_records_the_backbone(image_run):
    workdir = image_run["workdir"]
    record = json.loads((workdir / "backbone" / "backbone.json").read_text())
    assert record["weights"] == "random" and record["feature_dim"] == 8
    features = read_table(str(workdir / "features" / "train"))
    assert features.num_rows == 60 and len(features.column("embedding")[0].as_py()) == 8
    assert read_table(str(workdir / "features" / "test")).num_rows == 12
    manifest = json.loads((workdir / "model" / "manifest.json").read_text())
    # The geolocator's backbone is the one the features came from, recorded as what it is (random weights).
    assert manifest["backbone"]["weights"] == "random"
    assert manifest["backbone"]["weights_sha256"] == record["weights_sha256"]
    assert manifest["backbone"]["backbone"] == "tiny_backbone.keras" and manifest["backbone"]["feature_dim"] == 8
    assert (workdir / "model" / "geolocator.keras").exists()
    (method,) = image_run["report"]["methods"]
    assert image_run["report"]["methods"][method]["n"] == 12
    predictions = read_table(str(workdir / "predictions" / "run_date=1970-01-01"))
    assert predictions.num_rows == 12 and all(predictions.column("place_name").to_pylist())
    run_config = json.loads((workdir / "run_config.json").read_text())
    assert run_config["backbone_weights"] == "random" and run_config["train"] == str(workdir / "features" / "train")


@pytest.mark.slow
def test_locate_with_the_runs_model_gives_the_extracted_features_and_places(image_run):
    """A photo of the test set through locate: the same features extract_features stored, and a place."""
    workdir = image_run["workdir"]
    test_rows = read_table(str(workdir / "features" / "test")).to_pylist()
    manifest_rows = {line.split(",")[0]: line.split(",")[3] for line in
                     (image_run["root"] / "test.csv").read_text().splitlines()[1:]}  # fmt: skip
    uris = [manifest_rows[r["photo_id"]] for r in test_rows]
    locator = locate.Locator(str(workdir / "model"), str(workdir / "partitions"), allow_random_backbone=True)
    ((photos, images, failures),) = list(locate.decoded_batches(uris, batch_size=32))
    features, _ = locator.run(images)
    stored = np.array([r["embedding"] for r in test_rows], dtype=np.float32)
    assert not failures and np.abs(features - stored).max() <= 1e-4 * np.abs(stored).max()

    out, err = io.StringIO(), io.StringIO()
    code = locate.main([uris[0], "--model", str(workdir / "model"), "--partitions", str(workdir / "partitions"),
                        "--json", "--allow_random_backbone"], out=out, err=err)  # fmt: skip
    (row,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and row["photo"] == uris[0] and row["place"]["name"]
    assert "random weights" in err.getvalue()


def test_image_manifests_need_a_chosen_backbone(tmp_path):
    train = write_manifest(tmp_path / "train.csv", write_photos(tmp_path / "p", 2, seed=3))
    from schemas.cli import UsageError

    with pytest.raises(UsageError, match="--backbone_weights FILE\\|imagenet\\|random"):
        run_all.run(["--train", str(train), "--test", str(train), "--workdir", str(tmp_path / "w")])


@pytest.mark.slow
def test_locate_on_a_decompression_bomb_is_an_error_line_and_costs_no_memory(image_run, tmp_path):
    """A PNG declaring 60,000 x 60,000 pixels beside a good photo: an error line and exit 1, and the process's
    peak memory is that of the same run without the bomb (refused from its header: decoded, it would be 10.8 GB).

    The absolute peak of locate is TensorFlow + Keras (~630 MB here) plus the gazetteer (~170 MB while parsed)."""
    import os
    import subprocess
    import sys

    from tests import photo_files as pf

    workdir = image_run["workdir"]
    bomb = pf.write(tmp_path, "bomb.png", pf.bomb_png())
    ok = pf.write(tmp_path, "ok.jpg", pf.jpeg())
    code = (
        "import sys\n"
        "from pipelines import locate\n"
        "status = locate.main(sys.argv[1:])\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec from the (large) pytest process.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print('MAXRSS_KB', hwm)\n"
        "sys.exit(status)\n"
    )

    def run(*photos):
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, photos), "--model", str(workdir / "model"), "--partitions",
             str(workdir / "partitions"), "--json", "--allow_random_backbone"],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(pf.REPO)), capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    with_bomb, without = run(bomb, ok), run(ok)
    assert with_bomb.returncode == 1 and without.returncode == 0, with_bomb.stderr[-2000:]
    rows = {json.loads(line)["photo"]: json.loads(line) for line in with_bomb.stdout.splitlines() if line.startswith("{")}
    assert "too_many_pixels" in rows[str(bomb)]["error"] and rows[str(ok)]["place"]["name"]
    assert f"locate: {bomb}: too_many_pixels" in with_bomb.stderr
    peak = [int(done.stdout.split("MAXRSS_KB")[1].split()[0]) for done in (with_bomb, without)]
    assert peak[0] < peak[1] + 100 * 1024, f"peak RSS {peak[0] / 1024:.0f} MB with the bomb, {peak[1] / 1024:.0f} MB without"
    assert peak[0] < 1536 * 1024, f"peak RSS {peak[0] / 1024:.0f} MB"
