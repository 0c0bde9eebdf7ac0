"""Paths of the bundled data files in ``data/`` (see ``data/SOURCES.md``), so no code spells an absolute path."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# Upper bounds of the PlaNet reference partitions shipped in data/ (t_min is 50 for all three).
PLANET_REFERENCE_T_MAX = (1000, 2000, 5000)


def _existing(name: str) -> Path:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"bundled data file {name} is missing from {DATA_DIR} (see data/SOURCES.md)")
    return path


def mp16_coordinates() -> Path:
    """100,000 MP-16 training-photo coordinates (columns LAT, LON)."""
    return _existing("mp16_coordinates_100k.csv")


def mp16_s2cells(t_max: int = 1000) -> Path:
    """PlaNet adaptive S2 partition of MP-16 with t_min=50 and this t_max (1000, 2000 or 5000)."""
    if t_max not in PLANET_REFERENCE_T_MAX:
        raise ValueError(f"no PlaNet reference partition for t_max={t_max}; have {PLANET_REFERENCE_T_MAX}")
    return _existing(f"mp16_s2cells_50_{t_max}.csv")


def im2gps3k_places365() -> Path:
    """The 2,997 Im2GPS3k test photos with coordinates and Places365 scene labels."""
    return _existing("im2gps3k_places365.csv")


def yfcc4k_coordinates() -> Path:
    """The 4,536 YFCC4k test photos (columns name, lat, lon)."""
    return _existing("yfcc4k_coordinates.csv")


def yfcc25600_places365() -> Path:
    """25,600 YFCC photos with coordinates and Places365 scene labels (the real-signal run)."""
    return _existing("yfcc25600_places365.csv")
