"""Loaders of the bundled data sets in ``data/`` (see ``data/SOURCES.md``): MP-16 training coordinates,
the Im2GPS3k and YFCC4k test sets, and the YFCC25600 Places365 scene labels as features.

Every loader names the file and row of the first bad value instead of returning it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from sampledata import paths as data_paths

TEST_SETS = ("im2gps3k", "yfcc4k")


def _read_csv(path: Path) -> pa.Table:
    # Photo names like "10201275523.jpg" stay strings; numeric-looking ids must not become numbers.
    text_columns = {name: pa.string() for name in ("name", "IMG_ID", "AUTHOR")}
    return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types=text_columns))


def _numeric_column(table: pa.Table, column: str, path) -> np.ndarray:
    try:
        return table.column(column).to_numpy().astype(np.float64)
    except (pa.ArrowInvalid, TypeError, ValueError) as error:
        raise ValueError(f"{path}: column {column} does not hold numbers ({error})") from error


def _latlng_of(table: pa.Table, path, lat_column: str, lng_column: str) -> tuple[np.ndarray, np.ndarray]:
    lat = _numeric_column(table, _find_column(table.schema.names, lat_column, path), path)
    lng = _numeric_column(table, _find_column(table.schema.names, lng_column, path), path)
    bad = ~np.isfinite(lat) | ~np.isfinite(lng) | (np.abs(lat) > 90) | (np.abs(lng) > 180)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{path}: row {i} has an invalid location {lat_column}={lat[i]} {lng_column}={lng[i]}"
        )
    return lat, lng


def _find_column(names: Sequence[str], wanted: str, path) -> str:
    for name in names:
        if name.lower() == wanted.lower():
            return name
    raise ValueError(f"{path}: no column {wanted!r} (has: {', '.join(names)})")


def mp16_locations() -> tuple[np.ndarray, np.ndarray]:
    """The 100,000 bundled MP-16 training-photo coordinates (lat, lng in degrees)."""
    path = data_paths.mp16_coordinates()
    return _latlng_of(_read_csv(path), path, "LAT", "LON")


@dataclass(frozen=True)
class TestSet:
    photo_ids: list[str]
    lat: np.ndarray
    lng: np.ndarray
    indoor: np.ndarray | None  # real per-photo indoor labels where the source has them


def load_test_set(name: str) -> TestSet:
    """A bundled test set's photo ids and real coordinates (and Places365 indoor labels for Im2GPS3k)."""
    if name == "im2gps3k":
        path = data_paths.im2gps3k_places365()
        table = _read_csv(path)
        lat, lng = _latlng_of(table, path, "LAT", "LON")
        indoor = table.column("S3_Label").to_numpy() == 0
        return TestSet(table.column("IMG_ID").to_pylist(), lat, lng, indoor)
    if name == "yfcc4k":
        path = data_paths.yfcc4k_coordinates()
        table = _read_csv(path)
        lat, lng = _latlng_of(table, path, "lat", "lon")
        return TestSet(table.column("name").to_pylist(), lat, lng, None)
    raise ValueError(f"unknown test set {name!r}; known: {', '.join(TEST_SETS)}")


SCENE_LABEL_CLASSES = {"S365_Label": 365, "S16_Label": 16, "S3_Label": 3}
SCENE_PROBABILITIES = ("Prob_indoor", "Prob_natural", "Prob_urban")
SCENE_DIM = sum(SCENE_LABEL_CLASSES.values()) + len(SCENE_PROBABILITIES)


def scene_features(path=None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Photo names, lat, lng and the scene feature matrix (float32, n x 387) of a Places365 label CSV.

    Features: one-hot S365, one-hot S16, one-hot S3, then the indoor/natural/urban probabilities.
    """
    path = Path(path or data_paths.yfcc25600_places365())
    table = _read_csv(path)
    header = table.schema.names
    has_name = any(h.lower() == "name" for h in header)
    name_col = _find_column(header, "name" if has_name else "IMG_ID", path)
    lat, lng = _latlng_of(table, path, "lat", "lon")
    blocks = []
    for wanted, n_classes in SCENE_LABEL_CLASSES.items():
        column = _find_column(header, wanted, path)
        labels = _numeric_column(table, column, path)
        bad = ~np.isfinite(labels) | (labels < 0) | (labels >= n_classes) | (labels != np.floor(labels))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{path}: row {i} column {column} = {labels[i]:g} is not a class in 0..{n_classes - 1}"
            )
        one_hot = np.zeros((labels.size, n_classes), dtype=np.float32)
        one_hot[np.arange(labels.size), labels.astype(np.int64)] = 1.0
        blocks.append(one_hot)
    for wanted in SCENE_PROBABILITIES:
        column = _find_column(header, wanted, path)
        p = _numeric_column(table, column, path)
        # The source rounds to 9 digits (1.000000042 occurs); anything further off is not a probability.
        bad = ~np.isfinite(p) | (p < -1e-6) | (p > 1 + 1e-6)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{path}: row {i} column {column} = {p[i]} is not a probability")
        blocks.append(p.astype(np.float32)[:, None])
    names = table.column(name_col).to_pylist()
    return names, lat, lng, np.concatenate(blocks, axis=1)
