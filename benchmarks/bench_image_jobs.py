"""Benchmark ``image_jobs``: do the image jobs keep the model busy?

    python -m benchmarks.bench_image_jobs              # 500 JPEGs (about 5-8 minutes on 2 cores)
    python -m benchmarks.bench_image_jobs --images 60  # quick look

Setup (seeded): ``--images`` JPEGs of mixed sizes (from 480x360 to a 12-megapixel 4032x3024 phone photo,
smooth colour fields plus noise so they compress like photos) with a manifest; an Inception v3 backbone with
random weights (``trainer.backbone.build_backbone(None)``: the same work as ImageNet weights) saved as
``.keras``; for ``batch_predict`` a geolocator (that backbone plus three softmax heads) exported next to a
partitions artifact of three small synthetic sets.

Measured in one run, images/s (with CPU seconds of the process and its children, and the load average):
- ``extract_features.run(argv)`` and ``batch_predict.run(argv)`` end to end on the manifest (whatever
  decoding the jobs use today, through their entry points, on the default offline runner);
- the model alone (the same ``.keras`` file, ``model(x, training=False)`` in batches of 16) on the same
  images already decoded and resized;
- decoding alone (read + decode + resize, one thread), to say where the time goes, and the same with
  Pillow's JPEG ``draft`` mode (decode at a reduced DCT scale first), a proposal for ``imagery``.
Records key ``image_jobs`` with ``extract_features_over_backbone`` and ``batch_predict_over_backbone``
(job images/s over model-alone images/s; goal >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import record

LOG = logging.getLogger("bench_image_jobs")
SIZES = [(480, 360), (800, 600), (1024, 768), (1600, 1200), (2048, 1536), (3264, 2448), (4032, 3024)]
SIZE_WEIGHTS = [0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.1]
MODEL_BATCH = 16
SET_CLASSES = (50, 80, 120)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds and the 1-minute load average around a block."""

    def __enter__(self):
        self.wall, self.cpu, self.load = time.perf_counter(), _cpu(), os.getloadavg()[0]
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu() - self.cpu
        self.load = round((self.load + os.getloadavg()[0]) / 2, 2)

    def figures(self, n_images: int) -> dict:
        return {
            "wall_s": round(self.wall, 2),
            "cpu_s": round(self.cpu, 2),
            "load_average": self.load,
            "images_per_s": round(n_images / self.wall, 2),
        }


def make_jpegs(directory: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEGs of mixed sizes: a smooth random colour field plus noise, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = SIZES[rng.choice(len(SIZES), p=SIZE_WEIGHTS)]
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int16)
        noise = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        path = directory / f"photo_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def decoder():
    """The decode the jobs use: ``imagery.load_image`` once it exists, else extract_features' own."""
    try:
        from imagery import load_image

        return load_image, "imagery.load_image"
    except ImportError:
        from pipelines.extract_features import decode_image

        return decode_image, "pipelines.extract_features.decode_image"


def draft_decode(data: bytes, size: int = 299) -> np.ndarray:
    """A proposal measured beside the jobs' decode: JPEG ``draft`` mode lets libjpeg decode at 1/2, 1/4 or
    1/8 scale (never below ``size``) before the one resize, so a 12-megapixel photo is not fully decoded."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float32)


def model_alone(model_path: str, images: np.ndarray) -> Clock:
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    model(images[:MODEL_BATCH], training=False)  # warm-up: tracing and allocation
    with Clock() as clock:
        for lo in range(0, len(images), MODEL_BATCH):
            model(images[lo : lo + MODEL_BATCH], training=False)
    return clock


def make_geolocator(root: Path, backbone) -> tuple[str, str]:
    """A geolocator export (backbone + 3 heads) and the partitions artifact of its 3 synthetic sets."""
    import keras

    from benchmarks.synthetic import voronoi_partitions
    from partition_gen.partitions import save_partitions

    parts = voronoi_partitions(SET_CLASSES, seed=1, sets_checksum="bench-sets")
    save_partitions(parts, str(root / "partitions"))
    model_dir = root / "model"
    model_dir.mkdir()
    features = backbone.output
    heads = {
        name: keras.layers.Dense(k, activation="softmax", name=name)(features)
        for name, k in zip(parts.set_names, parts.n_classes)
    }
    geolocator = keras.Model(backbone.input, heads)
    geolocator.save(str(model_dir / "geolocator.keras"))
    manifest = {
        "model_id": "bench-geolocator",
        "embedding_dim": 2048,
        "set_names": list(parts.set_names),
        "n_classes": {n: int(k) for n, k in zip(parts.set_names, parts.n_classes)},
        "sets_checksum": "bench-sets",
        # The bench's backbone has random weights: said so, and allowed below with --allow_random_backbone.
        "backbone": {"backbone": "inception_v3", "weights": "random", "weights_sha256": "bench", "feature_dim": 2048},
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    from schemas import artifacts

    artifacts.write_marker(str(model_dir))  # a complete model artifact, as trainer.export leaves it
    return str(model_dir), str(model_dir / "geolocator.keras")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="image jobs throughput against the model alone")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import keras

    from pipelines import batch_predict, extract_features
    from trainer.backbone import build_backbone

    decode, decode_name = decoder()
    figures: dict = {"images": args.images, "decode": decode_name, "model_batch": MODEL_BATCH}
    with tempfile.TemporaryDirectory(prefix="bench-image-jobs-") as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        started = time.perf_counter()
        paths = make_jpegs(root / "photos", args.images)
        megapixels = [s for s in (os.path.getsize(p) for p in paths)]
        figures["jpeg_mb_total"] = round(sum(megapixels) / 2**20, 1)
        LOG.info("%d JPEGs (%.0f MB) in %.0f s", len(paths), figures["jpeg_mb_total"], time.perf_counter() - started)
        manifest = root / "photos.csv"
        rng = np.random.default_rng(2)
        lat, lng = rng.uniform(-60, 70, len(paths)), rng.uniform(-180, 180, len(paths))
        manifest.write_text(
            "photo_id,lat,lng,image_uri\n"
            + "".join(f"p{i},{a:.5f},{b:.5f},{p}\n" for i, (a, b, p) in enumerate(zip(lat, lng, paths)))
        )

        keras.utils.set_random_seed(0)
        backbone = build_backbone(None)
        backbone_path = str(root / "backbone.keras")
        backbone.save(backbone_path)
        model_dir, geolocator_path = make_geolocator(root, backbone)

        # Decoding alone, and the decoded images for the model-alone runs.
        with Clock() as clock:
            decoded = np.stack([decode(Path(p).read_bytes()) for p in paths]).astype(np.float32)
        figures["decode_alone"] = clock.figures(len(paths))
        LOG.info("decode alone: %s", figures["decode_alone"])
        with Clock() as clock:
            for p in paths:
                draft_decode(Path(p).read_bytes())
        figures["decode_alone_with_jpeg_draft"] = clock.figures(len(paths))
        LOG.info("decode alone, JPEG draft mode: %s", figures["decode_alone_with_jpeg_draft"])

        clock = model_alone(backbone_path, decoded)
        figures["backbone_alone"] = clock.figures(len(paths))
        LOG.info("backbone alone: %s", figures["backbone_alone"])
        clock = model_alone(geolocator_path, decoded)
        figures["geolocator_alone"] = clock.figures(len(paths))
        LOG.info("geolocator alone: %s", figures["geolocator_alone"])
        del decoded

        for job, argv_job, alone in (
            (
                "extract_features",
                ["--manifest", str(manifest), "--output", str(root / "features"), "--backbone_model", backbone_path],
                "backbone_alone",
            ),
            (
                "batch_predict",
                ["--manifest", str(manifest), "--model", model_dir, "--partitions", str(root / "partitions"),
                 "--output", str(root / "predictions"), "--run_date", "2024-01-01", "--input_kind", "images",
                 "--allow_random_backbone"],
                "geolocator_alone",
            ),
        ):
            module = extract_features if job == "extract_features" else batch_predict
            try:
                with Clock() as clock:
                    summary = module.run(argv_job)
            except (Exception, SystemExit) as err:  # a job that cannot run must not lose the other figures
                LOG.warning("%s failed: %s", job, err)
                figures[job] = {"error": f"{type(err).__name__}: {err}"}
                continue
            figures[job] = {**clock.figures(len(paths)), "rows_out": getattr(summary, "rows_out", None)}
            ratio = figures[job]["images_per_s"] / figures[alone]["images_per_s"]
            figures[f"{job}_over_backbone"] = round(ratio, 3)
            # The same ratio in CPU seconds per image: robust when other processes share the machine.
            figures[f"{job}_over_backbone_cpu"] = round(figures[alone]["cpu_s"] / figures[job]["cpu_s"], 3)
            LOG.info("%s: %s, %.2f of the model alone", job, figures[job], ratio)
    figures["goal_over_backbone"] = 0.8
    decode_s = figures["decode_alone"]["cpu_s"] / len(paths)
    model_s = figures["backbone_alone"]["cpu_s"] / len(paths)
    figures["decode_cpu_share"] = round(decode_s / (decode_s + model_s), 3)
    if not args.no_record:
        record("image_jobs", figures)
    print(figures, flush=True)
    return figures


if __name__ == "__main__":
    main()
