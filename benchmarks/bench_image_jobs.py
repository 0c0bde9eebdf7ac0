"""Benchmark ``image_jobs``: do the image jobs keep the model busy?

    python -m benchmarks.bench_image_jobs              # 500 JPEGs (about 4-5 minutes on a quiet 2-core machine)
    python -m benchmarks.bench_image_jobs --images 60  # quick look

Setup (seeded): ``--images`` JPEGs of mixed sizes (from 480x360 to a 12-megapixel 4032x3024 phone photo,
smooth colour fields plus noise so they compress like photos) with a manifest; an Inception v3 backbone with
random weights (``trainer.backbone.build_backbone(None)``: the same work as ImageNet weights) saved as
``.keras``; for ``batch_predict`` a geolocator (that backbone plus three softmax heads) exported next to a
partitions artifact of three small synthetic sets.

Measured in one run, images/s (with CPU seconds of the process, and the load average):
- decoding alone (read + ``imagery.load_image``, one thread) on all the images, and a full-size decode (no
  JPEG draft, the path before it) on the first ``--model_images``, to say where the time goes;
- the model alone (the same ``.keras`` file, ``model(x, training=False)`` in batches of 16, after one warm-up
  batch) on the first ``--model_images`` images already decoded and resized: the backbone, and the geolocator;
- each job (``extract_features.run(argv)``, ``batch_predict.run(argv)``, on the default offline runner) end to end
  twice: on the first ``STARTUP_IMAGES`` images (its fixed cost: Beam start-up, model loads, first traced call,
  committing the output) and on all of them.

Ratios (job images/s over model-alone images/s; goal >= 0.8):
- ``<job>_over_backbone`` -- the steady state, the issue's key: ``(images - STARTUP_IMAGES) / (t_all - t_startup)``
  over the model alone. It answers the issue's question (do decoding, resizing and the job's per-image work
  starve the model?) and is what a nightly run of millions of photos gets, where the fixed cost vanishes.
- ``<job>_over_backbone_whole_job`` -- ``images / t_all``: what this 500-image run gets, fixed cost included;
  ``<job>_startup`` gives that fixed cost in seconds.
- ``..._cpu`` variants: the same ratios in CPU seconds per image (robust when other processes share the machine).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results import record
from schemas.cli import Parser

LOG = logging.getLogger("bench_image_jobs")
SIZES = [(480, 360), (800, 600), (1024, 768), (1600, 1200), (2048, 1536), (3264, 2448), (4032, 3024)]
SIZE_WEIGHTS = [0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.1]
MODEL_BATCH = 16
STARTUP_IMAGES = 16  # one model batch: the small run that measures each job's fixed cost
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


def _photo_canvas(width: int, height: int, rng: np.random.Generator):
    """A smooth random colour field plus noise, so it compresses like a photo."""
    from PIL import Image

    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def make_jpegs(directory: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEGs of mixed sizes, quality 90: each cut at a random offset from one photo-like canvas per size
    (a canvas per image took most of the benchmark's budget; decoding cost depends on size and content
    statistics, which are the same)."""
    rng = np.random.default_rng(seed)
    canvases: dict = {}
    paths = []
    for i in range(n):
        w, h = SIZES[rng.choice(len(SIZES), p=SIZE_WEIGHTS)]
        if (w, h) not in canvases:
            canvases[(w, h)] = _photo_canvas(w + 64, h + 64, rng)
        x, y = (int(v) for v in rng.integers(0, 65, 2))
        path = directory / f"photo_{i:04d}.jpg"
        canvases[(w, h)].crop((x, y, x + w, y + h)).save(path, quality=90)
        paths.append(str(path))
    return paths


def full_size_decode(data: bytes, size: int = 299) -> np.ndarray:
    """``imagery.load_image`` without JPEG draft (the jobs' decode before it): a full-size decode, the one resize."""
    import imagery
    from imagery.decode import RESAMPLE

    rgb = imagery.decode_rgb(data)
    return np.asarray(rgb.resize((size, size), RESAMPLE), dtype=np.float32)


def model_alone(model_path: str, images: np.ndarray) -> Clock:
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    model(images[:MODEL_BATCH], training=False)  # warm-up: tracing and allocation (in the jobs' start-up figure)
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


def write_manifest(path: Path, paths: list[str]) -> str:
    rng = np.random.default_rng(2)
    lat, lng = rng.uniform(-60, 70, len(paths)), rng.uniform(-180, 180, len(paths))
    path.write_text(
        "photo_id,lat,lng,image_uri\n"
        + "".join(f"p{i},{a:.5f},{b:.5f},{p}\n" for i, (a, b, p) in enumerate(zip(lat, lng, paths)))
    )
    return str(path)


def job_argv(job: str, root: Path, manifest: str, tag: str, backbone_path: str, model_dir: str) -> list[str]:
    if job == "extract_features":
        return ["--manifest", manifest, "--output", str(root / f"features-{tag}"), "--backbone_model", backbone_path]
    return ["--manifest", manifest, "--model", model_dir, "--partitions", str(root / "partitions"),
            "--output", str(root / f"predictions-{tag}"), "--run_date", "2024-01-01", "--input_kind", "images",
            "--allow_random_backbone"]  # fmt: skip


def job_ratios(figures: dict, job: str, alone: str, n_images: int) -> None:
    """``<job>_over_backbone`` (steady state), ``..._whole_job`` and their CPU twins, from the two timed runs."""
    full, small, model = figures[job], figures[f"{job}_startup"], figures[alone]
    n_more = n_images - STARTUP_IMAGES
    wall, cpu = full["wall_s"] - small["wall_s"], full["cpu_s"] - small["cpu_s"]
    figures[f"{job}_steady_state"] = {"images": n_more, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                      "images_per_s": round(n_more / wall, 2) if wall > 0 else None}  # fmt: skip
    model_cpu_per_image = model["cpu_s"] / model["images"]
    if wall > 0 and cpu > 0:
        figures[f"{job}_over_backbone"] = round(n_more / wall / model["images_per_s"], 3)
        figures[f"{job}_over_backbone_cpu"] = round(model_cpu_per_image / (cpu / n_more), 3)
    figures[f"{job}_over_backbone_whole_job"] = round(full["images_per_s"] / model["images_per_s"], 3)
    figures[f"{job}_over_backbone_whole_job_cpu"] = round(model_cpu_per_image / (full["cpu_s"] / n_images), 3)


def main(argv: list[str] | None = None) -> dict:
    parser = Parser(description="image jobs throughput against the model alone")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model_images", type=int, default=96,
                        help="images of the model-alone runs (the first ones; default 96 = 6 batches)")
    parser.add_argument("--no_record", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import keras

    import imagery
    from pipelines import batch_predict, extract_features
    from trainer.backbone import build_backbone

    n_model = min(args.model_images, args.images)
    figures: dict = {"images": args.images, "decode": "imagery.load_image", "model_batch": MODEL_BATCH,
                     "startup_images": STARTUP_IMAGES, "model_images": n_model,
                     "key_ratio": "steady state (see the module doc); whole-job ratios in *_whole_job"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-image-jobs-") as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        started = time.perf_counter()
        paths = make_jpegs(root / "photos", args.images)
        figures["jpeg_mb_total"] = round(sum(os.path.getsize(p) for p in paths) / 2**20, 1)
        LOG.info("%d JPEGs (%.0f MB) in %.0f s", len(paths), figures["jpeg_mb_total"], time.perf_counter() - started)
        manifests = {
            "all": write_manifest(root / "photos.csv", paths),
            "startup": write_manifest(root / "photos-startup.csv", paths[:STARTUP_IMAGES]),
        }

        keras.utils.set_random_seed(0)
        backbone = build_backbone(None)
        backbone_path = str(root / "backbone.keras")
        backbone.save(backbone_path)
        model_dir, geolocator_path = make_geolocator(root, backbone)
        del backbone

        # Decoding alone (the jobs' decode), keeping the first n_model images for the model-alone runs.
        decoded = []
        with Clock() as clock:
            for i, p in enumerate(paths):
                pixels = imagery.load_image(Path(p).read_bytes())
                if i < n_model:
                    decoded.append(pixels)
        figures["decode_alone"] = clock.figures(len(paths))
        LOG.info("decode alone: %s", figures["decode_alone"])
        decoded = np.stack(decoded).astype(np.float32)
        with Clock() as clock:
            for p in paths[:n_model]:
                full_size_decode(Path(p).read_bytes())
        figures["decode_alone_full_size"] = clock.figures(n_model)
        LOG.info("decode alone, full size (no JPEG draft): %s", figures["decode_alone_full_size"])

        for name, path in (("backbone_alone", backbone_path), ("geolocator_alone", geolocator_path)):
            figures[name] = {**model_alone(path, decoded).figures(n_model), "images": n_model}
            LOG.info("%s: %s", name, figures[name])
        del decoded

        for job, module, alone in (
            ("extract_features", extract_features, "backbone_alone"),
            ("batch_predict", batch_predict, "geolocator_alone"),
        ):
            try:
                for tag, n in (("startup", STARTUP_IMAGES), ("all", len(paths))):
                    argv_job = job_argv(job, root, manifests[tag], tag, backbone_path, model_dir)
                    with Clock() as clock:
                        summary = module.run(argv_job)
                    key = job if tag == "all" else f"{job}_startup"
                    figures[key] = {**clock.figures(n), "images": n, "rows_out": getattr(summary, "rows_out", None)}
                    LOG.info("%s: %s", key, figures[key])
            except (Exception, SystemExit) as err:  # a job that cannot run must not lose the other figures
                LOG.warning("%s failed: %s", job, err)
                figures[job] = {"error": f"{type(err).__name__}: {err}"}
                continue
            job_ratios(figures, job, alone, len(paths))
            LOG.info("%s: %.2f of the model alone (steady state), %.2f whole job", job,
                     figures.get(f"{job}_over_backbone", float("nan")), figures[f"{job}_over_backbone_whole_job"])
    figures["goal_over_backbone"] = 0.8
    decode_s = figures["decode_alone"]["cpu_s"] / len(paths)
    model_s = figures["backbone_alone"]["cpu_s"] / n_model
    figures["decode_cpu_share"] = round(decode_s / (decode_s + model_s), 3)
    if not args.no_record:
        record("image_jobs", figures)
    print(figures, flush=True)
    return figures


if __name__ == "__main__":
    main()
