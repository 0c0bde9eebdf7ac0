"""Geolocate photos on this machine: each photo's predicted location, its nearest place, the score and the top-k.

    python -m pipelines.locate PATH... --model DIR --partitions DIR [--json] [--map FILE.png] [--top_k K]
        [--features FILE] [--batch_size N] [--allow_random_backbone]

PATH: photo files, folders (their image files, as ``ingest_photos`` takes them: .jpg .png .tif .heic .heif
.webp .gif .bmp .avif and kin, any case, recursively) or globs (quote them). ``--model``: a trainer export (``trainer.export``) with a geolocator;
``--partitions``: the partitions artifact of its geoclass sets (``run_all`` writes both under its workdir).
No Beam and no cluster: the model is loaded once and the photos go through it in batches; every photo is decoded
by ``imagery.load_image``, the same preprocessing as ``pipelines.extract_features`` and ``batch_predict``.
The location is the combiner's (``partition_gen.combine``, NormalizedSum over every set of the model, as the
nightly ``batch_predict``); the place is the nearest GeoNames place (city, region, country) from the offline
gazetteer in ``partition_gen.places``. ``--features FILE`` (Parquet with ``photo_id`` and ``embedding``, e.g.
the output of ``extract_features``) skips the images and runs the heads on precomputed embeddings.

Output: per photo one line ``PHOTO: LAT, LNG  PLACE  (score S)`` and its next-best alternatives indented;
with ``--json`` one JSON object per line instead: ``{"photo", "lat", "lng", "place": {"name", "city",
"admin1", "country", "country_code", "distance_km"}, "score", "topk": [{"lat", "lng", "score", "partition_id",
"place"}, ...]}``, or ``{"photo", "error"}`` for a photo that could not be located. ``--map FILE.png`` draws
the predictions and their top-k on a map (``partition_gen.maps.draw_predictions_map``).

A model whose backbone has random weights is refused (its places mean nothing) unless
``--allow_random_backbone`` is given, and then every run says so on stderr.

Exit status: 0 every photo located; 1 some photos (or the map) failed, each with one line on stderr saying
which and why; 2 usage error, nothing located (a bad flag, PATHs that name no image file, a ``--features``
path with no Parquet file, a missing or mismatched model or partitions artifact, a model without a geolocator
given photos, a random backbone without ``--allow_random_backbone``), with one line on stderr (one per PATH).
Inputs and artifacts are checked before TensorFlow loads, so these answer in seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# The same names as pipelines.ingest_photos takes (not imported from there: that module loads Beam).
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".heic", ".heif", ".hif", ".webp", ".gif", ".bmp", ".avif",
)  # fmt: skip
DEFAULT_BATCH = 16
DEFAULT_TOP_K = 5
# A photo file larger than this is refused before it is read (camera RAW files stay well below it).
MAX_FILE_BYTES = 512 * 1024 * 1024
FEATURES_OUTPUT = "features"
GEOLOCATOR_FILE = "geolocator.keras"  # trainer.export.GEOLOCATOR_FILE (that module loads TensorFlow)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Nothing can be located with these arguments; the message is the one line to print."""


@dataclass
class Failure:
    photo: str
    error: str


@dataclass
class Located:
    photo: str
    lat: float
    lng: float
    score: float
    place: dict
    topk: list[dict]
    # From the model's refinement index and calibrations (run_all stage 6), when it has them.
    method: str = ""
    radius50_km: float | None = None
    radius90_km: float | None = None


# ----------------------------------------------------------------------------------------------- inputs


def expand_paths(paths: Sequence[str]) -> tuple[list[str], list[Failure], int]:
    """Files to locate, failures for paths that name nothing, and the count of folder files skipped as non-images.

    Files named directly are always tried (a text file named .jpg gets its decode error); inside folders
    only files with an image extension are taken, so a folder's CSV or README does not count as a failure.
    """
    files: list[str] = []
    failures: list[Failure] = []
    skipped = 0
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        found.append(os.path.join(root, name))
                    else:
                        skipped += 1
            if not found:
                failures.append(Failure(path, "the folder holds no image files"))
            files += found
        elif os.path.exists(path):
            files.append(path)
        elif glob.has_magic(path):
            matched = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matched:
                failures.append(Failure(path, "no file matches this pattern"))
            files += matched
        else:
            failures.append(Failure(path, "no such file or folder"))
    # The same file named twice (a folder and a glob over it) is located once.
    return list(dict.fromkeys(files)), failures, skipped


def load_photo(path: str) -> np.ndarray:
    """The photo as the backbone's input (``imagery.load_image``); raises ``PhotoError`` saying why not."""
    from imagery import ImageError, load_image

    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise PhotoError(f"file of {size / 2**20:.0f} MB is larger than {MAX_FILE_BYTES // 2**20} MB")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise PhotoError(f"cannot read: {error.strerror or error}") from error
    try:
        return load_image(data)
    except ImageError as error:
        raise PhotoError(f"{error.reason}: {error.detail}") from error


class PhotoError(Exception):
    """One photo cannot be located; the message says why (one line)."""


def decoded_batches(
    paths: Sequence[str], batch_size: int, workers: int = 2
) -> Iterator[tuple[list[str], np.ndarray, list[Failure]]]:
    """(paths, images [n, 299, 299, 3], failures) per batch; the next batch decodes while the caller runs one.

    Pillow releases the GIL while decoding and resizing, so the threads overlap with each other and with
    TensorFlow; at most two batches of decoded images are held at a time.
    """

    def decode(path):
        try:
            return path, load_photo(path), None
        except PhotoError as error:
            return path, None, Failure(path, str(error).splitlines()[0])

    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(decode, p) for p in chunks[0]] if chunks else []
        for index in range(len(chunks)):
            results = [f.result() for f in pending]
            pending = [pool.submit(decode, p) for p in chunks[index + 1]] if index + 1 < len(chunks) else []
            good = [(p, image) for p, image, failure in results if failure is None]
            failures = [failure for _, _, failure in results if failure is not None]
            images = np.stack([image for _, image in good]) if good else np.zeros((0, 299, 299, 3), np.float32)
            yield [p for p, _ in good], images, failures


def features_problem(path: str) -> str | None:
    """Why ``--features PATH`` names no Parquet file at all (one line), or None."""
    from schemas.io import list_table_files

    try:
        list_table_files(path)  # raises, naming the path, when there is no Parquet file to read
    except FileNotFoundError as error:  # also an artifact folder without its _SUCCESS marker
        from schemas.io import path_exists

        if not any(ch in path for ch in "*?[") and not path_exists(path):
            return "no such file, folder or match"
        return str(error).splitlines()[0] if str(error) else "no such file, folder or match"
    except Exception as error:  # noqa: BLE001 - an incomplete artifact, an unreadable folder: say which
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None


def read_features(path: str, embedding_dim: int) -> tuple[list[str], np.ndarray, list[Failure]]:
    """(photo ids, embeddings [n, D], failures for rows that cannot be used) of a features table."""
    from schemas import columns as c
    from schemas import row_problem
    from schemas.io import read_table

    try:
        table = read_table(path)
    except Exception as error:  # noqa: BLE001 - a missing or unreadable file is a usage error here
        raise UsageError(f"--features {path}: cannot read it as Parquet: {str(error).splitlines()[0]}") from error
    missing = [name for name in (c.PHOTO_ID, c.EMBEDDING) if name not in table.column_names]
    if missing:
        raise UsageError(f"--features {path}: no column {', '.join(missing)} (has: {', '.join(table.column_names)})")
    ids, rows, failures = [], [], []
    for i, row in enumerate(table.select([c.PHOTO_ID, c.EMBEDDING]).to_pylist()):
        photo = str(row[c.PHOTO_ID]) if row[c.PHOTO_ID] not in (None, "") else f"{path}#row{i}"
        problem = row_problem(row, embedding_dim, need_embedding=True, need_location=False)
        if problem is not None:
            failures.append(Failure(photo, f"{problem[0]}: {problem[1]}"))
            continue
        ids.append(photo)
        rows.append(row[c.EMBEDDING])
    embeddings = np.asarray(rows, dtype=np.float32).reshape(len(rows), embedding_dim)
    return ids, embeddings, failures


# ----------------------------------------------------------------------------------------------- model


def _naming(error: BaseException, flag: str, path: str) -> str:
    """The error's first line, led by the flag and path when it does not name the path already."""
    if isinstance(error, OSError) and error.filename:  # "[Errno 2] No such file ...: 'DIR/manifest.json'"
        return f"{flag} {path}: {os.path.basename(str(error.filename))}: {error.strerror or 'cannot read it'}"
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return first if path in first else f"{flag} {path}: {first}"


class Locator:
    """A model artifact and its partitions, loaded once: images or embeddings -> located photos."""

    def __init__(
        self,
        model_dir: str,
        partitions_dir: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        allow_random_backbone: bool = False,
        images: bool = True,
    ):
        import threading

        from partition_gen.evaluation import default_method
        from partition_gen.partitions import check_model_matches, load_partitions, read_partitions_manifest
        from partition_gen.places import gazetteer
        from schemas import artifacts
        from schemas.io import IncompleteArtifactError

        # The gazetteer (~2 s of parsing) is built while TensorFlow and the model load.
        threading.Thread(target=gazetteer, name="gazetteer", daemon=True).start()
        try:
            # What can be refused without TensorFlow is refused first (a missing or mismatched artifact would
            # otherwise be said only after the tens of seconds its import takes).
            self.manifest = artifacts.read_model_manifest(model_dir)
        except (OSError, ValueError, KeyError, IncompleteArtifactError) as error:
            raise UsageError(_naming(error, "--model", model_dir)) from error
        try:
            self.partitions = load_partitions(partitions_dir)
        except (OSError, ValueError, KeyError, IncompleteArtifactError) as error:
            raise UsageError(_naming(error, "--partitions", partitions_dir)) from error
        try:
            check_model_matches(self.partitions, self.manifest, model_dir)
        except ValueError as error:
            raise UsageError(str(error).splitlines()[0]) from error
        if images and not artifacts.exists(artifacts.join(model_dir, GEOLOCATOR_FILE)):
            # The features model still locates precomputed embeddings.
            raise UsageError(
                f"--model {model_dir} has no {GEOLOCATOR_FILE} (a features-only model, exported with "
                "--no_geolocator or without --backbone_weights): use --features FILE with embeddings from "
                "pipelines.extract_features, or export the model with --backbone_weights"
            )
        from trainer import export

        try:
            self.warning = export.check_backbone(self.manifest, model_dir, allow_random_backbone)
        except ValueError as error:
            raise UsageError(str(error).splitlines()[0]) from error
        self.set_names = list(self.partitions.set_names)
        self.method = default_method(self.set_names)
        from partition_gen.refine import AccuracyExtras

        try:
            # Refinement ("+R") and confidence radii when the model directory has an index (run_all stage 6).
            self.extras = AccuracyExtras.load(model_dir, self.partitions)
        except (OSError, ValueError, IncompleteArtifactError) as error:
            raise UsageError(str(error).splitlines()[0]) from error
        self.top_k = top_k
        self.combiner = self.method.combiner(self.partitions, self.extras.top_k(top_k) if self.extras else top_k)
        self.embedding_dim = int(self.manifest["embedding_dim"])
        self.model_id = self.manifest["model_id"]
        binding = read_partitions_manifest(partitions_dir)
        try:
            if images:
                import keras

                geolocator = export.load_geolocator(model_dir, binding)
                # One pass gives both the backbone's features (the heads' input) and the heads' outputs.
                features = geolocator.get_layer(self.set_names[0]).input
                heads = {name: geolocator.get_layer(name).output for name in self.set_names}
                self.model = keras.Model(geolocator.input, {FEATURES_OUTPUT: features, **heads})
            else:
                self.model = export.load_features_model(model_dir, binding)
        except (OSError, ValueError, IncompleteArtifactError) as error:
            raise UsageError(str(error).splitlines()[0]) from error

    def run(self, x: np.ndarray) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """(features or None, {set: probabilities}) for a batch of images or embeddings."""
        outputs = self.model(x, training=False)
        outputs = {name: np.asarray(value) for name, value in outputs.items()}
        return outputs.pop(FEATURES_OUTPUT, None), outputs

    def locate(
        self, photos: Sequence[str], probabilities: dict[str, np.ndarray], features: np.ndarray | None = None
    ) -> list[Located | Failure]:
        from partition_gen.places import nearest_places

        if not photos:
            return []
        probs = {name: probabilities[name].astype(np.float64) for name in self.set_names}
        bad = np.zeros(len(photos), dtype=bool)
        for p in probs.values():
            bad |= ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)
        keep = np.flatnonzero(~bad)
        results: list[Located | Failure] = [
            Failure(photos[i], "inference_error: the model returned NaN, inf or negative probabilities")
            for i in np.flatnonzero(bad)
        ]
        if not keep.size:
            return results
        kept = {name: p[keep] for name, p in probs.items()}
        pred = self.combiner.predict(kept)
        # The method's own row, then its refined "+R" row when the index has one: the last is reported.
        method, lat, lng, (radius50, radius90) = self.method.name, pred.lat, pred.lng, (None, None)
        if self.extras is not None:
            embeddings = None if features is None else np.asarray(features, dtype=np.float32)[keep]
            method, lat, lng, (radius50, radius90) = self.extras.variants(
                self.method.name, self.combiner, pred, kept, embeddings)[-1]
        places = nearest_places(lat, lng)
        valid = pred.topk_ids[:, : self.top_k] >= 0
        k_places = nearest_places(pred.topk_lat[valid], pred.topk_lng[valid]).names()
        names = iter(k_places)
        for j, i in enumerate(keep):
            topk = [
                {
                    "lat": round(float(pred.topk_lat[j, r]), 6),
                    "lng": round(float(pred.topk_lng[j, r]), 6),
                    "score": float(pred.topk_scores[j, r]),
                    "partition_id": int(pred.topk_ids[j, r]),
                    "place": next(names),
                }
                for r in range(valid.shape[1])
                if valid[j, r]
            ]
            results.append(
                Located(
                    photo=photos[i],
                    lat=round(float(lat[j]), 6),
                    lng=round(float(lng[j]), 6),
                    score=float(pred.score[j]),
                    place=places.record(j),
                    topk=topk,
                    method=method,
                    radius50_km=None if radius50 is None else round(float(radius50[j]), 1),
                    radius90_km=None if radius90 is None else round(float(radius90[j]), 1),
                )
            )
        return results


# ----------------------------------------------------------------------------------------------- output


def to_json(result: Located | Failure) -> str:
    if isinstance(result, Failure):
        return json.dumps({"photo": result.photo, "error": result.error}, ensure_ascii=False)
    return json.dumps(
        {"photo": result.photo, "lat": result.lat, "lng": result.lng, "place": result.place,
         "score": result.score, "topk": result.topk, "method": result.method,
         "radius50_km": result.radius50_km, "radius90_km": result.radius90_km},
        ensure_ascii=False,
    )  # fmt: skip


# Beyond this the nearest place is only a pointer (a point at sea, in a desert): the text says how far it is.
FAR_KM = 50.0


def to_text(result: Located) -> str:
    place = result.place["name"]
    if result.place["distance_km"] > FAR_KM:
        place += f" ({result.place['distance_km']:,.0f} km away)"
    radius = "" if result.radius50_km is None else (
        f", half of such photos within {result.radius50_km:,.0f} km, 90% within {result.radius90_km:,.0f} km")
    lines = [f"{result.photo}: {result.lat:.5f}, {result.lng:.5f}  {place}  (score {result.score:.4g}{radius})"]
    for rank, alt in enumerate(result.topk[1:], start=2):
        lines.append(f"    {rank}. {alt['lat']:.5f}, {alt['lng']:.5f}  {alt['place']}  (score {alt['score']:.4g})")
    return "\n".join(lines)


class Reporter:
    """Writes each result as it comes (stdout), one stderr line per failure, and keeps what the map needs."""

    def __init__(self, as_json: bool, out=None, err=None):
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.located: list[Located] = []
        self.failed: list[Failure] = []

    def emit(self, results: Iterable[Located | Failure]) -> None:
        for result in results:
            if isinstance(result, Failure):
                self.failed.append(result)
                print(f"locate: {result.photo}: {result.error}", file=self.err)
                if self.as_json:
                    print(to_json(result), file=self.out)
            else:
                self.located.append(result)
                print(to_json(result) if self.as_json else to_text(result), file=self.out)
        self.out.flush()


def draw_map(path: str, located: Sequence[Located], title: str) -> str:
    from partition_gen.maps import draw_predictions_map

    k = max((len(r.topk) for r in located), default=0)
    topk_lat = np.full((len(located), k), np.nan)
    topk_lng = np.full((len(located), k), np.nan)
    for i, result in enumerate(located):
        for r, alt in enumerate(result.topk):
            topk_lat[i, r], topk_lng[i, r] = alt["lat"], alt["lng"]
    return draw_predictions_map(
        path,
        np.array([r.lat for r in located]),
        np.array([r.lng for r in located]),
        topk_lat=topk_lat,
        topk_lng=topk_lng,
        labels=[os.path.basename(r.photo) for r in located],
        title=title,
    )


# ----------------------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    from schemas.cli import Parser

    # schemas.cli's parser: a misspelt flag is named with the nearest valid one, in one line, status 2.
    parser = Parser(
        prog="pipelines.locate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 all photos located, 1 some failed (one stderr line each), 2 usage error.",
    )  # fmt: skip
    parser.add_argument("paths", nargs="*", metavar="PATH", help="photo files, folders or (quoted) globs")
    parser.add_argument("--model", required=True, help="model artifact directory (trainer export)")
    parser.add_argument("--partitions", required=True, help="partitions artifact of the model's geoclass sets")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--map", default=None, metavar="FILE.png", help="draw the predictions and top-k on a map")
    parser.add_argument("--features", default=None, metavar="FILE",
                        help="precomputed embeddings (Parquet: photo_id, embedding) instead of photos")
    parser.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="alternatives per photo (default 5)")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="photos per model call")
    parser.add_argument("--allow_random_backbone", action="store_true",
                        help="use a model whose backbone has random weights (tests only; warns every run)")
    return parser


def main(argv: Sequence[str] | None = None, out=None, err=None) -> int:
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.paths) == bool(args.features):
        parser.error("give photo PATHs or --features FILE (one of the two)")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top_k and --batch_size must be at least 1")
    if args.map and not args.map.lower().endswith(".png"):
        parser.error(f"--map {args.map}: give a .png file name")
    reporter = Reporter(args.json, out, err)
    # The inputs are looked at before the model loads: nothing to locate is said at once.
    if args.features:
        problem = features_problem(args.features)
        if problem:
            print(f"locate: error: --features {args.features}: {problem}", file=err)
            return EXIT_USAGE
    else:
        files, failures, skipped = expand_paths(args.paths)
        if not files:
            for failure in failures:
                print(f"locate: error: {failure.photo}: {failure.error}", file=err)
            if skipped:
                print(f"locate: error: skipped {skipped} file(s) without an image extension", file=err)
            return EXIT_USAGE
    try:
        locator = Locator(args.model, args.partitions, top_k=args.top_k,
                          allow_random_backbone=args.allow_random_backbone, images=args.features is None)
    except UsageError as error:
        print(f"locate: error: {error}", file=err)
        return EXIT_USAGE
    if locator.warning:
        print(f"locate: {locator.warning}", file=err)

    if args.features:
        try:
            ids, embeddings, failures = read_features(args.features, locator.embedding_dim)
        except UsageError as error:
            print(f"locate: error: {error}", file=err)
            return EXIT_USAGE
        reporter.emit(failures)
        for start in range(0, len(ids), max(args.batch_size, 256)):
            chunk = slice(start, start + max(args.batch_size, 256))
            _, probs = locator.run(embeddings[chunk])
            reporter.emit(locator.locate(ids[chunk], probs, embeddings[chunk]))
    else:
        reporter.emit(failures)
        if skipped:
            print(f"locate: skipped {skipped} file(s) without an image extension in the given folders", file=err)
        for photos, images, bad in decoded_batches(files, args.batch_size):
            reporter.emit(bad)
            if photos:
                features, probs = locator.run(images)
                reporter.emit(locator.locate(photos, probs, features))

    status = EXIT_SOME_FAILED if reporter.failed else EXIT_OK
    if args.map:
        if not reporter.located:
            print(f"locate: --map {args.map}: no photo was located, no map drawn", file=err)
            return EXIT_SOME_FAILED
        try:
            title = f"{len(reporter.located)} photos located by {locator.model_id} ({locator.method.name})"
            draw_map(args.map, reporter.located, title)
        except Exception as error:  # noqa: BLE001 - the locations are printed already; say why the map is missing
            print(f"locate: --map {args.map}: {type(error).__name__}: {str(error).splitlines()[0]}", file=err)
            return EXIT_SOME_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
