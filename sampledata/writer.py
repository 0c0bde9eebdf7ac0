"""Writers of the samples: ``schemas.FEATURES`` tables of simulated (``make_sample``) or scene-label
(``make_scene_sample``) features, plus ``sample.json`` with every setting, for provenance.

Run them through ``python -m sampledata`` (see :mod:`sampledata.__main__`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from sampledata.datasets import (
    SCENE_LABEL_CLASSES,
    SCENE_PROBABILITIES,
    TEST_SETS,
    load_test_set,
    mp16_locations,
    scene_features,
)
from sampledata.field import STREAM_PHOTOS, FeatureModel, LocationField
from sampledata.photos import jitter_locations, simulate_photos_detailed
from sampledata.plots import plot_feature_model
from schemas import FEATURES, validate_features
from schemas.io import write_table_atomic
from schemas.splits import held_out

log = logging.getLogger(__name__)

DEFAULT_JITTER_M = 30.0


def features_table(photo_ids: Sequence[str], lat, lng, embeddings: np.ndarray) -> pa.Table:
    """A ``schemas.FEATURES`` table; built in batches so list offsets stay int32 for any size."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = embeddings.shape
    rows_per_batch = max(1, min(65536, (2**31 - 1) // max(dim, 1)))
    batches = []
    for start in range(0, n, rows_per_batch):
        stop = min(n, start + rows_per_batch)
        offsets = pa.array(np.arange(0, (stop - start) * dim + 1, dim, dtype=np.int32))
        values = pa.array(embeddings[start:stop].ravel())
        batches.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(list(photo_ids[start:stop]), type=pa.string()),
                    pa.array(np.asarray(lat[start:stop], dtype=np.float64)),
                    pa.array(np.asarray(lng[start:stop], dtype=np.float64)),
                    pa.ListArray.from_arrays(offsets, values),
                ],
                schema=FEATURES,
            )
        )
    table = pa.Table.from_batches(batches, schema=FEATURES)
    validate_features(table, embedding_dim=dim)
    return table


def _write(table: pa.Table, path: Path) -> None:
    write_table_atomic(table, str(path))
    log.info("wrote %s (%d rows)", path, table.num_rows)


def make_sample(
    out_dir,
    n_train: int,
    seed: int,
    model: FeatureModel | None = None,
    test_sets: Sequence[str] = TEST_SETS,
    *,
    jitter_m: float = DEFAULT_JITTER_M,
    plot: bool = True,
    progress: bool = False,
) -> dict[str, str]:
    """Write train.parquet and test_<set>.parquet (schemas.FEATURES) with simulated features.

    ``model`` holds every setting of the feature model (default :class:`FeatureModel`). Returns the
    written paths by name.
    """
    if n_train < 1:
        raise ValueError(f"n_train must be positive, got {n_train}")
    model = model or FeatureModel()
    dim = model.dim
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    field = LocationField(seed, model)

    pool_lat, pool_lng = mp16_locations()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_PHOTOS, 0, 1])))
    replace = n_train > pool_lat.size
    picked = rng.choice(pool_lat.size, size=n_train, replace=replace)
    train_lat, train_lng = jitter_locations(pool_lat[picked], pool_lng[picked], jitter_m, rng)
    log.info("simulating %d training photos (dim %d, seed %d)", n_train, dim, seed)
    train = simulate_photos_detailed(
        train_lat, train_lng, seed, field=field, photo_stream=0, progress=progress
    )
    width = max(7, len(str(n_train - 1)))
    train_ids = [f"train-{i:0{width}d}" for i in range(n_train)]
    paths = {"train": str(out / "train.parquet")}
    _write(features_table(train_ids, train_lat, train_lng, train.embeddings), out / "train.parquet")

    summary = {
        "kind": "simulated",
        "seed": int(seed),
        "dim": int(dim),
        "n_train": int(n_train),
        "train_sampled_with_replacement": bool(replace),
        "train_indoor": int(train.indoor.sum()),
        "jitter_m": jitter_m,
        "model": model.describe(),
        "test_sets": {},
    }
    test_embeddings = {}
    for stream, name in enumerate(test_sets, start=1):
        test = load_test_set(name)
        sim = simulate_photos_detailed(
            test.lat, test.lng, seed, field=field, indoor=test.indoor, photo_stream=stream
        )
        path = out / f"test_{name}.parquet"
        _write(features_table(test.photo_ids, test.lat, test.lng, sim.embeddings), path)
        paths[f"test_{name}"] = str(path)
        test_embeddings[name] = (test, sim)
        summary["test_sets"][name] = {
            "n": len(test.photo_ids),
            "indoor": int(sim.indoor.sum()),
            "indoor_from": "Places365 S3_Label == 0" if test.indoor is not None else "indoor_share draw",
        }
    (out / "sample.json").write_text(json.dumps(summary, indent=2) + "\n")
    paths["summary"] = str(out / "sample.json")
    if plot:
        paths["figure"] = str(out / "feature_model.png")
        plot_feature_model(
            paths["figure"],
            field,
            train_lat,
            train_lng,
            {n: t for n, (t, _) in test_embeddings.items()},
            seed,
        )
    log.info(
        "sample ready in %s: %d training photos (%d indoor), test sets %s",
        out,
        n_train,
        int(train.indoor.sum()),
        ", ".join(f"{k}={v['n']}" for k, v in summary["test_sets"].items()),
    )
    return paths


def is_held_out(photo_ids: Sequence[str], seed: int, test_fraction: float) -> np.ndarray:
    """Deterministic split (``schemas.splits``): held out when the seed-salted SHA-256 of the id falls below test_fraction."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # sha256 salted by the seed (schemas.splits says why not the examples' md5).
    return held_out(photo_ids, test_fraction, digest="sha256", salt=f"{int(seed)}:".encode())


def make_scene_sample(out_dir, seed: int, test_fraction: float = 0.2, csv_path=None) -> dict[str, str]:
    """Write train.parquet / test.parquet of YFCC25600 photos with their scene labels as features."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names, lat, lng, features = scene_features(csv_path)
    held_out = is_held_out(names, seed, test_fraction)
    paths = {}
    for split, mask in (("train", ~held_out), ("test", held_out)):
        index = np.flatnonzero(mask)
        path = out / f"{split}.parquet"
        _write(features_table([names[i] for i in index], lat[index], lng[index], features[index]), path)
        paths[split] = str(path)
    summary = {
        "kind": "scene",
        "seed": int(seed),
        "dim": int(features.shape[1]),
        "test_fraction": test_fraction,
        "n_train": int((~held_out).sum()),
        "n_test": int(held_out.sum()),
        "features": [f"one-hot {k} ({v})" for k, v in SCENE_LABEL_CLASSES.items()]
        + list(SCENE_PROBABILITIES),
    }
    (out / "sample.json").write_text(json.dumps(summary, indent=2) + "\n")
    paths["summary"] = str(out / "sample.json")
    log.info(
        "scene sample ready in %s: %d train, %d test, dim %d",
        out,
        summary["n_train"],
        summary["n_test"],
        summary["dim"],
    )
    return paths
