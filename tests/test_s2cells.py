"""The vectorized S2 core against s2sphere (the reference), point by point, on 1,000,000 random points and
on the hard cases: poles, the antimeridian, cube-face edges and corners, level 0 and level 30."""

from __future__ import annotations

import math
import multiprocessing

import numpy as np
import pytest
import s2sphere

from partition_gen import s2cells

N_SPHERE = 500_000  # uniform on the sphere
N_LATLNG = 500_000  # uniform in latitude/longitude (denser near the poles)
REFERENCE_WORKERS = 2


def _s2sphere_ids(args: tuple[list[float], list[float], list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """s2sphere's leaf id, level-14 id and id at the given per-point level: the slow obvious reference."""
    lats, lngs, levels = args
    cell_id, latlng = s2sphere.CellId.from_lat_lng, s2sphere.LatLng.from_degrees
    leaf, level14, at_level = [], [], []
    for lat, lng, level in zip(lats, lngs, levels):
        cell = cell_id(latlng(lat, lng))
        leaf.append(cell.id())
        level14.append(cell.parent(14).id())
        at_level.append(cell.parent(level).id())
    as_u64 = lambda values: np.array(values, dtype=np.uint64)  # noqa: E731
    return as_u64(leaf), as_u64(level14), as_u64(at_level)


@pytest.fixture(scope="module")
def random_points():
    """1,000,000 points and s2sphere's ids for them, computed once for the module on 2 processes."""
    rng = np.random.default_rng(7)
    z = rng.uniform(-1.0, 1.0, N_SPHERE)
    lat = np.concatenate([np.degrees(np.arcsin(z)), rng.uniform(-90.0, 90.0, N_LATLNG)])
    lng = rng.uniform(-180.0, 180.0, N_SPHERE + N_LATLNG)
    levels = rng.integers(0, 31, lat.size)
    pieces = np.array_split(np.arange(lat.size), 8)
    jobs = [(lat[p].tolist(), lng[p].tolist(), levels[p].tolist()) for p in pieces]
    with multiprocessing.get_context("spawn").Pool(REFERENCE_WORKERS) as pool:
        results = pool.map(_s2sphere_ids, jobs)
    leaf, level14, at_level = (np.concatenate(parts) for parts in zip(*results))
    return lat, lng, levels, leaf, level14, at_level


def _first_mismatch(lat, lng, got, want) -> str:
    k = int(np.argmax(got != want))
    return f"{int((got != want).sum())} mismatches, first lat={lat[k]!r} lng={lng[k]!r}: {int(got[k]):016x} != {int(want[k]):016x}"


def test_million_random_points_match_s2sphere_at_level_14(random_points):
    lat, lng, _, _, level14, _ = random_points
    assert lat.size >= 1_000_000
    got = s2cells.latlng_to_cell_ids(lat, lng)
    assert got.dtype == np.uint64
    assert np.array_equal(got, level14), _first_mismatch(lat, lng, got, level14)


def test_million_random_points_match_s2sphere_at_leaf_level(random_points):
    lat, lng, _, leaf, _, _ = random_points
    got = s2cells.latlng_to_cell_ids(lat, lng, level=30)
    assert np.array_equal(got, leaf), _first_mismatch(lat, lng, got, leaf)


def test_million_random_points_match_s2sphere_at_random_levels(random_points):
    lat, lng, levels, _, _, at_level = random_points
    got = np.empty_like(at_level)
    for level in range(31):
        chosen = levels == level
        got[chosen] = s2cells.latlng_to_cell_ids(lat[chosen], lng[chosen], level=level)
    assert set(np.unique(levels)) == set(range(31))
    assert np.array_equal(got, at_level), _first_mismatch(lat, lng, got, at_level)


def test_random_points_cover_all_faces(random_points):
    _, _, _, leaf, _, _ = random_points
    assert set(np.unique(leaf >> np.uint64(61)).tolist()) == set(range(6))


# ------------------------------------------------------------------------------------------ hard cases


def _nudged(values: np.ndarray, steps: int = 3) -> np.ndarray:
    """Each value, its neighbours a few ulps away, and the values 1e-15 away."""
    out = [values, values + 1e-15, values - 1e-15]
    up, down = values.copy(), values.copy()
    for _ in range(steps):
        up, down = np.nextafter(up, np.inf), np.nextafter(down, -np.inf)
        out += [up, down]
    return np.concatenate(out)


def _face_edge_points() -> tuple[np.ndarray, np.ndarray]:
    """Points on and next to the 12 cube-face edges: where two of |x|, |y|, |z| are equal."""
    grid = np.linspace(-180.0, 180.0, 73)
    lats, lngs = [], []
    # |x| = |y|: the meridians 45 + k·90 degrees, at any latitude within the equatorial faces' reach.
    for meridian in (-135.0, -45.0, 45.0, 135.0):
        lat = np.linspace(-35.0, 35.0, 15)
        lng = _nudged(np.full(lat.size, meridian))
        lats.append(np.tile(lat, lng.size // lat.size))
        lngs.append(lng)
    # |z| = |x| or |z| = |y|: tan(lat) = max(|cos lng|, |sin lng|) (the edges of the polar faces).
    theta = np.radians(grid)
    edge_lat = np.degrees(np.arctan(np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))))
    for sign in (1.0, -1.0):
        lat = _nudged(sign * edge_lat)
        lats.append(lat)
        lngs.append(np.tile(grid, lat.size // grid.size))
    # The 8 cube corners, where all three components are equal in size.
    corner_lat = np.degrees(math.atan(1 / math.sqrt(2)))
    for sign in (1.0, -1.0):
        lat = _nudged(np.full(4, sign * corner_lat))
        lats.append(lat)
        lngs.append(np.tile(np.array([-135.0, -45.0, 45.0, 135.0]), lat.size // 4))
    lat, lng = np.concatenate(lats), np.concatenate(lngs)
    keep = (np.abs(lat) <= 90) & (np.abs(lng) <= 180)
    return lat[keep], lng[keep]


def _hard_points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    some_lng = np.concatenate([[-180.0, -135.0, -90.0, -45.0, -0.0, 0.0, 45.0, 90.0, 135.0, 180.0], rng.uniform(-180, 180, 20)])
    some_lat = np.concatenate([[-90.0, -89.999999, -45.0, -1e-300, -0.0, 0.0, 5e-324, 1e-15, 45.0, 89.999999, 90.0], rng.uniform(-90, 90, 20)])
    poles_lat = np.repeat([90.0, -90.0, np.nextafter(90.0, 0), np.nextafter(-90.0, 0)], some_lng.size)
    poles_lng = np.tile(some_lng, 4)
    antimeridian_lng = np.repeat(_nudged(np.array([180.0, -180.0]))[:, None], some_lat.size, axis=1).ravel()
    keep = np.abs(antimeridian_lng) <= 180
    antimeridian_lng = antimeridian_lng[keep]
    antimeridian_lat = np.tile(some_lat, 2 * 9)[keep]
    equator_lng = _nudged(np.linspace(-180.0, 180.0, 25))
    equator_lng = equator_lng[np.abs(equator_lng) <= 180]
    meridian_lat = _nudged(np.linspace(-90.0, 90.0, 25))
    meridian_lat = meridian_lat[np.abs(meridian_lat) <= 90]
    edge_lat, edge_lng = _face_edge_points()
    lat = np.concatenate([poles_lat, antimeridian_lat, np.zeros(equator_lng.size), meridian_lat, edge_lat])
    lng = np.concatenate([poles_lng, antimeridian_lng, equator_lng, np.zeros(meridian_lat.size), edge_lng])
    return lat, lng


def _reference_leaf_cells(lat: np.ndarray, lng: np.ndarray) -> list[s2sphere.CellId]:
    return [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)) for a, b in zip(lat.tolist(), lng.tolist())]


def test_hard_points_include_exact_ties_between_xyz_components():
    # Guards the test below: the edge points must really put S2's face choice on a tie.
    lat, lng = _hard_points()
    ties = 0
    for a, b in zip(lat.tolist(), lng.tolist()):
        p = s2sphere.LatLng.from_degrees(a, b).to_point()
        x, y, z = abs(p[0]), abs(p[1]), abs(p[2])
        top = max(x, y, z)
        ties += [x, y, z].count(top) > 1
    assert ties >= 20


@pytest.mark.parametrize("level", list(range(31)))
def test_hard_points_match_s2sphere_at_every_level(level):
    lat, lng = _hard_points()
    reference = _reference_leaf_cells(lat, lng)
    want = np.array([cell.parent(level).id() for cell in reference], dtype=np.uint64)
    got = s2cells.latlng_to_cell_ids(lat, lng, level=level)
    assert np.array_equal(got, want), _first_mismatch(lat, lng, got, want)


def test_poles_map_to_the_polar_faces():
    lng = np.linspace(-180.0, 180.0, 9)
    north = s2cells.latlng_to_cell_ids(np.full(9, 90.0), lng, level=0)
    south = s2cells.latlng_to_cell_ids(np.full(9, -90.0), lng, level=0)
    assert set((north >> np.uint64(61)).tolist()) == {2}
    assert set((south >> np.uint64(61)).tolist()) == {5}


def test_both_sides_of_the_antimeridian_are_adjacent_cells():
    lat = np.array([-60.0, -10.0, 0.0, 10.0, 60.0])
    east = s2cells.latlng_to_cell_ids(lat, np.full(5, 180.0))
    west = s2cells.latlng_to_cell_ids(lat, np.full(5, -180.0))
    for a, b in zip(east.tolist(), west.tolist()):
        cell = s2sphere.CellId(a)
        assert a == b or s2sphere.CellId(b) in cell.get_all_neighbors(14)


# ------------------------------------------------------------------------------- shapes and bad input


def test_shapes_broadcast_and_empty_input():
    lat = np.array([[10.0, 20.0], [30.0, 40.0]])
    ids = s2cells.latlng_to_cell_ids(lat, 5.0)
    assert ids.shape == (2, 2)
    assert np.array_equal(ids.ravel(), s2cells.latlng_to_cell_ids(lat.ravel(), np.full(4, 5.0)))
    assert s2cells.latlng_to_cell_ids(48.85, 2.35).shape == ()
    empty = s2cells.latlng_to_cell_ids([], [])
    assert empty.dtype == np.uint64 and empty.size == 0


def test_libm_fallback_gives_the_same_ids(monkeypatch, random_points):
    # Platforms whose NumPy sin/cos differ from the C library's use this path; it must be exact too.
    lat, lng, _, _, level14, _ = random_points
    monkeypatch.setattr(s2cells, "_sin", s2cells._libm_sin)
    monkeypatch.setattr(s2cells, "_cos", s2cells._libm_cos)
    got = s2cells.latlng_to_cell_ids(lat[:50_000], lng[:50_000])
    assert np.array_equal(got, level14[:50_000])


def test_input_spanning_several_chunks_matches_one_chunk(monkeypatch):
    rng = np.random.default_rng(3)
    lat, lng = rng.uniform(-90, 90, 1000), rng.uniform(-180, 180, 1000)
    whole = s2cells.latlng_to_cell_ids(lat, lng)
    monkeypatch.setattr(s2cells, "CHUNK_POINTS", 37)
    assert np.array_equal(s2cells.latlng_to_cell_ids(lat, lng), whole)


@pytest.mark.parametrize(
    "lat, lng, message",
    [
        ([10.0, np.nan], [0.0, 0.0], "lat=nan at index 1 is not a number"),
        ([0.0], [np.inf], "lng=inf at index 0 is not in [-180, 180]"),
        ([90.000001], [0.0], "lat=90.000001 at index 0 is not in [-90, 90]"),
        ([0.0, 0.0, 0.0], [1.0, -180.5, 2.0], "lng=-180.5 at index 1"),
        (["north"], [0.0], "lat must be numbers"),
    ],
)
def test_bad_coordinates_are_refused_with_the_value_named(lat, lng, message):
    with pytest.raises(ValueError) as err:
        s2cells.latlng_to_cell_ids(lat, lng)
    assert message in str(err.value)


@pytest.mark.parametrize("level", [-1, 31, 14.0, True, "14"])
def test_bad_levels_are_refused(level):
    with pytest.raises(ValueError, match="level"):
        s2cells.latlng_to_cell_ids([0.0], [0.0], level=level)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        s2cells.latlng_to_cell_ids([1.0, 2.0], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------- id arithmetic, tokens and centres


def _random_cells(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 31, n)
    leaf = s2cells.latlng_to_cell_ids(rng.uniform(-90, 90, n), rng.uniform(-180, 180, n), level=30)
    ids = np.array([s2sphere.CellId(int(c)).parent(int(lv)).id() for c, lv in zip(leaf, levels)], dtype=np.uint64)
    return ids, levels


def test_lookup_tables_equal_s2spheres():
    from s2sphere import sphere

    assert s2cells._LOOKUP_POS.tolist() == sphere.LOOKUP_POS
    assert s2cells._LOOKUP_IJ.tolist() == sphere.LOOKUP_IJ


def test_levels_and_validity_match_s2sphere():
    ids, levels = _random_cells(5000, 1)
    assert s2cells.cell_levels(ids).dtype == np.int8
    assert np.array_equal(s2cells.cell_levels(ids), [s2sphere.CellId(int(c)).level() for c in ids])
    assert np.array_equal(s2cells.cell_levels(ids), levels)
    rng = np.random.default_rng(2)
    arbitrary = rng.integers(0, 2**63, 5000, dtype=np.uint64) << np.uint64(1) | rng.integers(0, 2, 5000, dtype=np.uint64)
    arbitrary = np.concatenate([arbitrary, ids, np.array([0, 1, 2, 6 << 61 | 1, 2**64 - 1], dtype=np.uint64)])
    want = [s2sphere.CellId(int(c)).is_valid() for c in arbitrary]
    assert np.array_equal(s2cells.is_valid_cell_id(arbitrary), want)


def test_parents_match_s2sphere():
    ids, levels = _random_cells(5000, 4)
    rng = np.random.default_rng(5)
    targets = (rng.random(ids.size) * (levels + 1)).astype(int)
    for target in range(31):
        chosen = targets == target
        got = s2cells.parent_cell_ids(ids[chosen], target)
        want = [s2sphere.CellId(int(c)).parent(target).id() for c in ids[chosen]]
        assert np.array_equal(got, np.array(want, dtype=np.uint64)), target


def test_parent_finer_than_the_cell_is_refused():
    face_cell = s2cells.latlng_to_cell_ids([0.0], [0.0], level=3)
    with pytest.raises(ValueError, match="coarser than level 4"):
        s2cells.parent_cell_ids(face_cell, 4)


def test_invalid_ids_are_refused():
    for bad in ([0], [6 << 61 | 1], [-5], [1.5]):
        with pytest.raises(ValueError):
            s2cells.cell_levels(bad)


def test_tokens_round_trip_and_match_s2sphere():
    ids, _ = _random_cells(5000, 6)
    tokens = s2cells.cell_ids_to_tokens(ids)
    assert tokens == [s2sphere.CellId(int(c)).to_token() for c in ids]
    assert np.array_equal(s2cells.tokens_to_cell_ids(tokens), ids)
    assert np.array_equal(s2cells.tokens_to_cell_ids([t.upper() for t in tokens]), ids)


def test_tokens_of_the_real_planet_partition_round_trip():
    from sampledata.paths import mp16_s2cells

    lines = mp16_s2cells(1000).read_text().splitlines()[3:]
    tokens = [line.split(",")[1] for line in lines if line]
    ids = s2cells.tokens_to_cell_ids(tokens)
    assert ids.size > 10_000
    assert np.array_equal(ids, [s2sphere.CellId.from_token(t).id() for t in tokens])
    assert s2cells.cell_ids_to_tokens(ids) == tokens
    assert np.array_equal(s2cells.cell_levels(ids), [s2sphere.CellId.from_token(t).level() for t in tokens])


@pytest.mark.parametrize("token", ["", "xyz", "89c25g", "1" * 17, "0", "\u00e9", 123])
def test_bad_tokens_are_refused(token):
    with pytest.raises(ValueError, match="token"):
        s2cells.tokens_to_cell_ids([token])


def test_centres_match_s2sphere():
    ids, _ = _random_cells(5000, 8)
    ids = np.concatenate([ids, s2cells.latlng_to_cell_ids([90.0, -90.0, 0.0, 0.0], [0.0, 0.0, 180.0, -180.0], 0)])
    xyz = s2cells.cell_center_xyz(ids)
    reference = [s2sphere.CellId(int(c)) for c in ids]
    want = np.array([[p[0], p[1], p[2]] for p in (cell.to_point() for cell in reference)])
    assert np.array_equal(xyz, want)
    lat, lng = s2cells.cell_center_latlng(ids)
    want_ll = np.array([[ll.lat().degrees, ll.lng().degrees] for ll in (cell.to_lat_lng() for cell in reference)])
    np.testing.assert_allclose(lat, want_ll[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lng, want_ll[:, 1], rtol=0, atol=1e-12)


def test_a_points_cell_centre_is_within_the_cell_size_of_it():
    rng = np.random.default_rng(9)
    lat, lng = rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000)
    c_lat, c_lng = s2cells.cell_center_latlng(s2cells.latlng_to_cell_ids(lat, lng, level=14))
    from partition_gen.geo import haversine_km

    # Level-14 cells are at most ~0.9 km across (S2's max diagonal at level 14 is ~0.85 km).
    assert haversine_km(lat, lng, c_lat, c_lng).max() < 0.9


def test_face_ij_round_trip_matches_s2sphere():
    ids, _ = _random_cells(3000, 10)
    face, i, j = s2cells.cell_ids_to_face_ij(ids)
    for c, f, a, b in zip(ids.tolist(), face.tolist(), i.tolist(), j.tolist()):
        assert s2sphere.CellId(c).to_face_ij_orientation()[:3] == (f, a, b)
    leaf_ids = s2cells.face_ij_to_cell_ids(face, i, j)
    want = [s2sphere.CellId.from_face_ij(f, a, b).id() for f, a, b in zip(face.tolist(), i.tolist(), j.tolist())]
    assert np.array_equal(leaf_ids, np.array(want, dtype=np.uint64))
    levels = s2cells.cell_levels(ids)
    for level in np.unique(levels):
        chosen = levels == level
        assert np.array_equal(s2cells.face_ij_to_cell_ids(face[chosen], i[chosen], j[chosen], int(level)), ids[chosen])
