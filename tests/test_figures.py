"""Figure 4: panels zoom to the top region, always show or point to the truth, and are drawn offline."""

from __future__ import annotations

import numpy as np
import pytest

from partition_gen import maps
from partition_gen.figures import figure_file_name, plot_progressive_map
from partition_gen.geo import haversine_km, latlng_to_xyz
from partition_gen.partitions import build_partitions
from tests.test_maps import IBERIA_CAPES, coast_found, offline  # noqa: F401  (fixture)

MADRID, LOS_ANGELES = (40.4, -3.7), (34.05, -118.25)


def _iberian_sets():
    """Nodes around Iberia and the US; sets nest (each finer set splits the previous classes)."""
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(36.5, 43.5, 1500), rng.uniform(30, 45, 500)])
    lng = np.concatenate([rng.uniform(-9.0, 3.0, 1500), rng.uniform(-120, -75, 500)])
    xyz = latlng_to_xyz(lat, lng)
    assignments = {}
    for name, step in (("set1", 4.0), ("set2", 2.0), ("set3", 1.0)):
        cells = np.floor(lat / step).astype(int) * 1000 + np.floor(lng / step).astype(int)
        assignments[name] = np.unique(cells, return_inverse=True)[1]
    parts = build_partitions(assignments, np.ones(lat.size, dtype=np.int64), xyz, "x")
    return parts, assignments, lat, lng


def _probabilities(assignments, lat, lng, centre):
    out = {}
    for name, labels in assignments.items():
        p = np.zeros(labels.max() + 1)
        np.add.at(p, labels, np.exp(-haversine_km(lat, lng, *centre) / 100.0))
        out[name] = (p + 1e-6) / (p + 1e-6).sum()
    return out


def _panels(path):
    return [p for p in maps.read_georeference(path) if p["panel"].startswith("panel")]


def _inside(panel, lat, lng):
    return panel["lng"][0] <= lng <= panel["lng"][1] and panel["lat"][0] <= lat <= panel["lat"][1]


def test_panels_zoom_in_and_show_prediction_and_truth(tmp_path, offline):  # noqa: F811
    parts, assignments, lat, lng = _iberian_sets()
    path = str(tmp_path / figure_file_name("12345_abc@N00.jpg"))
    steps = plot_progressive_map(parts, _probabilities(assignments, lat, lng, MADRID), *MADRID, path,
                                 photo_id="12345_abc@N00.jpg")
    panels = _panels(path)
    assert len(panels) == len(steps) == 3
    spans = [p["lng"][1] - p["lng"][0] for p in panels]
    assert spans[-1] < spans[0] / 2, f"the view does not zoom in as sets are added: {spans}"
    for panel, step in zip(panels, steps):
        assert _inside(panel, step.lat, step.lng)
        assert _inside(panel, *MADRID)
    # Each panel has its locator beside it, not on top of it.
    records = {p["panel"]: p for p in maps.read_georeference(path)}
    for k in range(1, 4):
        map_box, locator_box = records[f"panel{k}"]["pixels"], records[f"locator{k}"]["pixels"]
        assert locator_box[1] >= map_box[3], "locator overlaps its map panel"
        # The locator (>= 40 degrees around Iberia) draws the Iberian coast.
        assert coast_found(path, f"locator{k}", IBERIA_CAPES, radius=2) == [True, True]


def test_a_far_truth_is_pointed_at_from_the_panel_edge(tmp_path, offline):  # noqa: F811
    from PIL import Image

    parts, assignments, lat, lng = _iberian_sets()
    path = str(tmp_path / "far.png")
    plot_progressive_map(parts, _probabilities(assignments, lat, lng, MADRID), *LOS_ANGELES, path)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    green = np.array([0x2C, 0xA0, 0x2C])  # tab:green, used for the truth and its pointer only
    for panel in _panels(path):
        assert not _inside(panel, *LOS_ANGELES)
        left, top, right, bottom = (int(round(v)) for v in panel["pixels"])
        # The truth lies west: the pointer (arrow and its label) is in the left half of the panel.
        box = rgb[top:bottom, left:right]
        ys, xs = np.nonzero(np.abs(box - green).max(axis=-1) < 30)
        assert xs.size > 10 and xs.max() < (right - left) / 2


@pytest.mark.parametrize(
    "photo_id, expected",
    [
        ("1000269685_e60e9cdfb4_1125_78841376@N00.jpg", "figure4_1000269685_e60e9cdfb4_1125_78841376_N00.png"),
        ("holiday/IMG 0001.JPEG", "figure4_holiday_IMG_0001.png"),
        ("../../etc/passwd", "figure4_etc_passwd.png"),
        ("@@@", "figure4_photo.png"),
    ],
)
def test_figure_file_names_are_safe(photo_id, expected):
    assert figure_file_name(photo_id) == expected
