"""Maps draw coastlines and borders from the bundled data with the network cut off.

Coastline pixels are checked at capes whose coordinates are taken from gazetteers (not from the drawn data):
a dark outline pixel must lie within a few pixels of each, and an all-ocean area must be plain ocean.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from partition_gen import maps

# (lat, lng) of well-known capes: Cabo da Roca, Cabo de São Vicente, Cape Leeuwin, Cape York, Cape Agulhas.
CAPES = [(38.78, -9.50), (37.02, -8.99), (-34.37, 115.14), (-10.69, 142.53), (-34.83, 20.00)]
IBERIA_CAPES = CAPES[:2]
OPEN_OCEAN = [(-10.0, -130.0), (0.0, -140.0), (-40.0, -20.0), (-30.0, 80.0)]  # far from any island


@pytest.fixture
def offline(monkeypatch):
    """Every attempt to open a network connection fails (and is counted)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == [], "a map tried to reach the network"


def _pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _hex(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def _panel(path, name):
    return next(p for p in maps.read_georeference(path) if p["panel"] == name)


def coast_found(path, panel_name, points, radius=3):
    """For each (lat, lng): is there a coastline-dark pixel within ``radius`` pixels of it?"""
    rgb = _pixels(path)
    panel = _panel(path, panel_name)
    cols, rows = maps.to_pixel(panel, [p[0] for p in points], [p[1] for p in points])
    found = []
    for col, row in zip(cols, rows):
        c, r = int(round(col)), int(round(row))
        window = rgb[max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1]
        found.append(bool((window.max(axis=-1) < 110).any()))
    return found


def plain_ocean(path, panel_name, points, radius=4):
    rgb = _pixels(path)
    cols, rows = maps.to_pixel(_panel(path, panel_name), [p[0] for p in points], [p[1] for p in points])
    ocean = _hex(maps.OCEAN)
    result = []
    for col, row in zip(cols, rows):
        c, r = int(round(col)), int(round(row))
        window = rgb[r - radius : r + radius + 1, c - radius : c + radius + 1]
        result.append(bool((np.abs(window - ocean).max(axis=-1) <= 2).all()))
    return result


def _nodes(n=3000, seed=0):
    """Nodes where people take photos: around a few cities on land, weighted like photo counts."""
    rng = np.random.default_rng(seed)
    cities = np.array([(40.4, -3.7), (48.9, 2.3), (51.5, -0.1), (40.7, -74.0), (34.0, -118.2), (-33.9, 151.2),
                       (35.7, 139.7), (-23.5, -46.6), (41.9, 12.5), (52.5, 13.4)])
    pick = rng.integers(0, len(cities), n)
    lat = cities[pick, 0] + rng.normal(0, 1.5, n)
    lng = cities[pick, 1] + rng.normal(0, 1.5, n)
    return lat, lng, pick


def test_set_map_draws_coasts_and_keeps_the_sea_plain_offline(tmp_path, offline):
    lat, lng, labels = _nodes()
    path = maps.render_set_map(lat, lng, labels, "ClassSet 1: 10 classes", str(tmp_path / "set1.png"))
    assert coast_found(path, "world", CAPES) == [True] * len(CAPES)
    assert plain_ocean(path, "world", OPEN_OCEAN) == [True] * len(OPEN_OCEAN)
    # Land carries the class colours: inland Spain is not ocean-coloured.
    rgb = _pixels(path)
    col, row = maps.to_pixel(_panel(path, "world"), 40.0, -4.0)
    assert np.abs(rgb[int(row), int(col)] - _hex(maps.OCEAN)).max() > 10
    # The zoomed views show the densest regions (Europe is; the regions' shares add up to at most 1).
    zooms = [p for p in maps.read_georeference(path) if p["panel"].startswith("zoom")]
    assert len(zooms) == 2
    assert any(z["lng"][0] <= 2.3 <= z["lng"][1] and z["lat"][0] <= 48.9 <= z["lat"][1] for z in zooms)
    europe = next(z["panel"] for z in zooms if z["lng"][0] <= -9.5 <= z["lng"][1] and z["lat"][0] <= 38.8 <= z["lat"][1])
    assert coast_found(path, europe, IBERIA_CAPES) == [True, True]


def test_predictions_map_zooms_to_the_points_and_draws_coasts_offline(tmp_path, offline):
    lat, lng = np.array([38.72, 37.39]), np.array([-9.14, -5.98])  # Lisbon, Seville
    topk_lat = np.array([[38.72, 40.4, 41.15], [37.39, 36.72, 38.0]])
    topk_lng = np.array([[-9.14, -3.7, -8.61], [-5.98, -4.42, -1.13]])
    path = maps.draw_predictions_map(str(tmp_path / "p.png"), lat, lng, topk_lat=topk_lat, topk_lng=topk_lng,
                                     labels=["a.jpg", "b.jpg"], title="two photos")
    panel = _panel(path, "map")
    assert panel["lng"][0] < -9.5 and panel["lng"][1] > -1.13 and panel["lng"][1] - panel["lng"][0] < 30
    assert coast_found(path, "map", IBERIA_CAPES) == [True, True]
    assert coast_found(path, "locator", [(-34.37, 115.14)], radius=2) == [True]


def test_prediction_density_map_draws_coasts_offline(tmp_path, offline):
    lat, lng, _ = _nodes(2000, seed=1)
    path = maps.draw_prediction_density(str(tmp_path / "d.png"), lat, lng, title="nightly")
    assert coast_found(path, "world", CAPES) == [True] * len(CAPES)
    assert plain_ocean(path, "world", OPEN_OCEAN) == [True] * len(OPEN_OCEAN)


def test_without_coastlines_the_check_fails(tmp_path, monkeypatch):
    """The pixel check is not vacuous: with the outline layer switched off it finds no coast at the capes."""
    monkeypatch.setattr(maps, "draw_outlines", lambda *a, **k: None)
    lat, lng, _ = _nodes(500)
    path = maps.draw_prediction_density(str(tmp_path / "d.png"), lat, lng)
    assert coast_found(path, "world", CAPES[2:]) == [False] * 3


def test_boundaries_parse_the_bundled_data():
    parts, levels, boxes = maps.boundaries("gshhs", "c")
    assert len(parts) == len(levels) == len(boxes) > 1000
    assert boxes[:, :2].min() >= -180 and boxes[:, :2].max() <= 180
    # Australia: a land polygon whose box holds Cape York and Cape Leeuwin.
    assert any(level == 1 and b[0] < 115.2 and b[1] > 142.5 and b[2] < -34.3 and b[3] > -10.7 for level, b in zip(levels, boxes))
    lines, _, _ = maps.boundaries("countries", "l")
    assert len(lines) > 100


def test_densest_regions_against_a_brute_force_count():
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(30, 50, 700), rng.uniform(-40, -20, 300)])
    lng = np.concatenate([rng.uniform(-120, -80, 700), rng.uniform(110, 150, 300)])
    regions = maps.densest_regions(lat, lng, n=2, width=60, height=30)
    assert len(regions) == 2
    for extent, share in regions:
        inside = (lng >= extent[0]) & (lng < extent[1]) & (lat >= extent[2]) & (lat < extent[3])
        assert share == pytest.approx(inside.mean())
    assert regions[0][1] == pytest.approx(0.7) and regions[1][1] == pytest.approx(0.3)


def test_titles_are_words():
    from partition_gen.params import GeoclassSetSpec

    spec = GeoclassSetSpec("set4", "merge", 4541, (0.7, 0.2, 0.1), (0.9, 0.1), feature_dims=tuple(range(1200)))
    assert maps.map_title(spec, 4541) == (
        "ClassSet 4: 4,541 classes; node score mostly by photo count; edges mostly by visual distance "
        "(1,200 feature dimensions)"
    )
    planet = GeoclassSetSpec("planet", "planet", t_min=25, t_max=500)
    assert maps.map_title(planet, 812) == "PlaNet: 812 classes; S2 cells split above 500 photos, dropped below 25 (PlaNet)"
