"""``python -m pipelines.locate`` as a user runs it: photos per second over 40 photos (``--photos N``), and its start-up seconds
beside a bare ``python -c "import tensorflow"`` measured in the same run.

Setup: a model artifact with the real Inception v3 geolocator (random weights: the cost is the same as with
ImageNet weights) and three heads, partitions of random geoclass sets, and N generated JPEGs of mixed sizes
(from 320x240 to 4032x3024, the sizes of phone and camera photos) in a temporary folder.

Method, each a fresh process (``subprocess``, wall clock), so imports and model loading count as a user sees them:
1. ``import tensorflow`` alone: the floor every TensorFlow command pays.
2. ``locate`` on 1 photo: the start-up (imports, model and partitions loading, gazetteer, first batch).
3. ``locate`` on the N photos: photos/s = (N - 1) / (time(N) - time(1)), the steady cost per extra photo
   (decoding overlapped with inference, the model called in batches of 16).
The load average before the runs is recorded too: other jobs on the machine slow every figure alike.

    python -m benchmarks.bench_locate [--photos 40]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from schemas.cli import Parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(320, 240), (640, 480), (1024, 768), (1600, 1200), (1200, 1600), (3264, 2448), (4032, 3024)]


def make_photos(folder: str, n: int, seed: int = 0) -> list[str]:
    """n JPEGs, sizes cycling through SIZES, smooth random content (compresses like a photo)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        small = rng.integers(0, 255, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        path = os.path.join(folder, f"photo{i:03d}.jpg")
        image.save(path, quality=88)
        paths.append(path)
    return paths


def make_artifacts(root: str) -> tuple[str, str]:
    """(model dir, partitions dir): Inception v3 geolocator (random weights) + heads over random geoclass sets."""
    import keras

    from benchmarks.synthetic import voronoi_partitions
    from partition_gen.partitions import read_partitions_manifest, save_partitions
    from trainer.backbone import FEATURE_DIM
    from trainer.export import export_model
    from trainer.model import build_model

    parts = voronoi_partitions((400, 500, 600), seed=0, sets_checksum="bench-locate")
    partitions = os.path.join(root, "partitions")
    save_partitions(parts, partitions)
    keras.utils.set_random_seed(0)
    heads = build_model(FEATURE_DIM, dict(zip(parts.set_names, parts.n_classes)), seed=0)
    model = os.path.join(root, "model")
    export_model(heads, model, read_partitions_manifest(partitions), backbone_weights="random")
    return model, partitions


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": REPO}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    return time.perf_counter() - started, done


def measure(n_photos: int = 40) -> dict:
    root = tempfile.mkdtemp(prefix="bench-locate-")
    try:
        model, partitions = make_artifacts(root)
        folder = os.path.join(root, "photos")
        paths = make_photos(folder, n_photos)
        load = os.getloadavg()[0]
        tf_seconds, done = timed([sys.executable, "-c", "import tensorflow"])
        assert done.returncode == 0, done.stderr[-2000:]
        base = [sys.executable, "-m", "pipelines.locate", "--model", model, "--partitions", partitions, "--json",
                "--allow_random_backbone"]  # fmt: skip
        one_seconds, done = timed(base + [paths[0]])
        assert done.returncode == 0 and len(done.stdout.splitlines()) == 1, done.stderr[-2000:]
        all_seconds, done = timed(base + [folder])
        assert done.returncode == 0 and len(done.stdout.splitlines()) == n_photos, done.stderr[-2000:]
        return {
            "photos": n_photos,
            "photo_sizes": [f"{w}x{h}" for w, h in SIZES],
            "photos_per_s": round((n_photos - 1) / (all_seconds - one_seconds), 2),
            "startup_s_locate_1_photo": round(one_seconds, 2),
            "wall_s_locate_all_photos": round(all_seconds, 2),
            "startup_s_import_tensorflow": round(tf_seconds, 2),
            "load_average_before": round(load, 2),
            "command": "python -m pipelines.locate PHOTOS --model M --partitions P --json --allow_random_backbone",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40, help="photos (default 40: fits make bench's 1 minute)")
    args = parser.parse_args(argv)
    figures = measure(args.photos)
    from benchmarks.results import record

    record("locate", figures)
    for key, value in figures.items():
        print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
