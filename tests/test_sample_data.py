"""sampledata: the bundled data, the simulated-feature model and the scene-label sample."""

from __future__ import annotations

import csv
import hashlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

import sampledata as sd
from partition_gen.geo import EARTH_RADIUS_KM, haversine_km, latlng_to_xyz, xyz_to_latlng
from sampledata import paths as data_paths
from sampledata.datasets import SCENE_DIM
from sampledata.plots import destination, similarity_by_distance
from schemas import FEATURES
from schemas import columns as c


def read_csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def field():
    return sd.LocationField(seed=0)


@pytest.fixture(scope="module")
def mp16():
    rows = read_csv_rows(data_paths.mp16_coordinates())
    return np.array([float(r["LAT"]) for r in rows]), np.array([float(r["LON"]) for r in rows])


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    paths = sd.make_sample(out, n_train=3000, seed=4, model=sd.FeatureModel(dim=32))
    return out, paths


# -- bundled data ----------------------------------------------------------------------------------------


def test_loaders_return_every_row_of_the_bundled_files_with_its_own_id_and_location():
    # Compared with an independent reader (csv module), row by row: a loader that drops, reorders, parses
    # ids as numbers or swaps lat/lng fails here.
    rows = read_csv_rows(data_paths.mp16_coordinates())
    lat, lng = sd.mp16_locations()
    np.testing.assert_array_equal(lat, [float(r["LAT"]) for r in rows])
    np.testing.assert_array_equal(lng, [float(r["LON"]) for r in rows])
    for name, path, id_col, lat_col, lng_col in (
        ("im2gps3k", data_paths.im2gps3k_places365(), "IMG_ID", "LAT", "LON"),
        ("yfcc4k", data_paths.yfcc4k_coordinates(), "name", "lat", "lon"),
    ):
        rows = read_csv_rows(path)
        test = sd.load_test_set(name)
        assert test.photo_ids == [r[id_col] for r in rows]
        np.testing.assert_array_equal(test.lat, [float(r[lat_col]) for r in rows])
        np.testing.assert_array_equal(test.lng, [float(r[lng_col]) for r in rows])
        if name == "im2gps3k":
            np.testing.assert_array_equal(test.indoor, [r["S3_Label"] == "0" for r in rows])
        else:
            assert test.indoor is None
    with pytest.raises(ValueError, match="unknown test set 'im2gps'"):
        sd.load_test_set("im2gps")
    with pytest.raises(ValueError, match="t_max"):
        data_paths.mp16_s2cells(3000)


# Fingerprints of the features written by pipelines/sample_data.py (main before issue 15 moved it to
# sampledata/), for fixed seeds: the move and the one-settings-object refactor changed no feature bit.
OLD_SIMULATE_ROW_SUMS = [
    3.1768546402454376, -3.405417576432228, -0.12340323999524117,
    -3.3181848526000977, 2.648582760244608, 6.54713037610054,
]  # fmt: skip
OLD_SAMPLE = {
    "train": (50, -13.467591596767306, 301.80836246162653,
              [5.511206619441509, -1.2902060579508543, 1.719523586332798, 0.8588797748088837]),
    "test_yfcc4k": (4536, 975.154212572093, 29230.146206177124,
                    [-0.4191860556602478, 2.2818441092967987, 6.565485589206219, 1.5749208480119705]),
}  # fmt: skip


def test_features_are_bit_identical_to_the_code_before_the_move(tmp_path):
    lat = np.array([48.8566, -33.87, 40.7128, 35.68, 0.0, -89.9])
    lng = np.array([2.3522, 151.21, -74.006, 139.69, 0.0, 179.9])
    emb = sd.simulate_photos(lat, lng, seed=3, model=sd.FeatureModel(dim=16))
    assert emb.astype(np.float64).sum(axis=1).tolist() == OLD_SIMULATE_ROW_SUMS
    paths = sd.make_sample(tmp_path, n_train=50, seed=5, model=sd.FeatureModel(dim=8), test_sets=("yfcc4k",), plot=False)
    for name, (n, total, abs_total, first_rows) in OLD_SAMPLE.items():
        table = pq.read_table(paths[name])
        emb = np.stack(table.column(c.EMBEDDING).to_numpy(zero_copy_only=False)).astype(np.float64)
        assert table.num_rows == n
        assert float(emb.sum()) == total and float(np.abs(emb).sum()) == abs_total, name
        assert emb[:4].sum(axis=1).tolist() == first_rows, name


# -- the feature model -----------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_other_seed_other_features(sample, tmp_path):
    out, paths = sample
    again = sd.make_sample(tmp_path, n_train=3000, seed=4, model=sd.FeatureModel(dim=32), plot=False)
    for name in ("train", "test_im2gps3k", "test_yfcc4k"):
        first = open(paths[name], "rb").read()
        second = open(again[name], "rb").read()
        assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest(), name
    lat, lng = np.array([10.0, 48.85]), np.array([20.0, 2.35])
    a = sd.simulate_photos(lat, lng, seed=1, model=sd.FeatureModel(dim=16))
    np.testing.assert_array_equal(a, sd.simulate_photos(lat, lng, seed=1, model=sd.FeatureModel(dim=16)))
    assert not np.allclose(a, sd.simulate_photos(lat, lng, seed=2, model=sd.FeatureModel(dim=16)))


def test_written_tables_have_the_features_schema_and_the_real_test_locations(sample, mp16):
    out, paths = sample
    train = pq.read_table(paths["train"])
    assert train.schema.equals(FEATURES, check_metadata=False)
    assert train.num_rows == 3000
    emb = np.stack(train.column(c.EMBEDDING).to_numpy(zero_copy_only=False))
    assert emb.shape == (3000, 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert len(set(train.column(c.PHOTO_ID).to_pylist())) == 3000

    # Training photos sit within tens of metres of an MP-16 coordinate, but not exactly on it.
    tree = cKDTree(latlng_to_xyz(*mp16))
    lat, lng = train.column(c.LAT).to_numpy(), train.column(c.LNG).to_numpy()
    chord, nearest = tree.query(latlng_to_xyz(lat, lng))
    jitter_m = 1000 * haversine_km(lat, lng, mp16[0][nearest], mp16[1][nearest])
    assert jitter_m.max() < 300 and 15 < np.median(jitter_m) < 80
    assert (jitter_m > 0).all()

    for name, path, id_col, lat_col, lng_col in (
        ("test_im2gps3k", data_paths.im2gps3k_places365(), "IMG_ID", "LAT", "LON"),
        ("test_yfcc4k", data_paths.yfcc4k_coordinates(), "name", "lat", "lon"),
    ):
        rows = read_csv_rows(path)
        table = pq.read_table(paths[name])
        assert table.schema.equals(FEATURES, check_metadata=False)
        assert table.column(c.PHOTO_ID).to_pylist() == [r[id_col] for r in rows]
        np.testing.assert_array_equal(table.column(c.LAT).to_numpy(), [float(r[lat_col]) for r in rows])
        np.testing.assert_array_equal(table.column(c.LNG).to_numpy(), [float(r[lng_col]) for r in rows])
    png = plt.imread(out / "feature_model.png")
    assert png.shape[0] > 400 and png.shape[1] > 1000 and png[..., :3].std() > 0.05  # a drawn figure


def test_similarity_curves_fall_with_distance_for_outdoor_photos_and_stay_flat_indoors(field, mp16):
    # The curves feature_model.png draws: a wrong field (no locality) or indoor photos with signal fail here.
    curves = similarity_by_distance(field, mp16[0][:300], mp16[1][:300], seed=0, distances_km=(0.1, 10, 3000))
    assert curves["signal"][0] > 0.9 and abs(curves["signal"][2]) < 0.1
    assert curves["outdoor photos"][0] > curves["outdoor photos"][1] > curves["outdoor photos"][2]
    assert max(abs(v) for v in curves["indoor photos"]) < 0.05


def test_more_training_photos_than_the_pool_are_drawn_with_replacement(tmp_path):
    import json

    paths = sd.make_sample(tmp_path, n_train=100_003, seed=1, model=sd.FeatureModel(dim=4), test_sets=(), plot=False)
    meta = pq.read_metadata(paths["train"])
    assert meta.num_rows == 100_003
    assert json.loads(open(paths["summary"]).read())["train_sampled_with_replacement"] is True


def probe_pairs(seed: int, n: int, distance_km: float, mp16):
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(mp16[0]), n, replace=False)
    lat, lng = mp16[0][pick], mp16[1][pick]
    lat_b, lng_b = destination(lat, lng, rng.uniform(0, 360, n), distance_km)
    np.testing.assert_allclose(haversine_km(lat, lng, lat_b, lng_b), distance_km, rtol=1e-6)
    return lat, lng, lat_b, lng_b


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_photos_1km_apart_are_far_more_alike_than_3000km_apart_except_indoors(field, mp16):
    n = 400
    lat, lng, near_lat, near_lng = probe_pairs(1, n, 1.0, mp16)
    _, _, far_lat, far_lng = probe_pairs(1, n, 3000.0, mp16)
    outdoor = np.zeros(n, dtype=bool)

    def photos(la, ln, stream, indoor):
        return sd.simulate_photos(la, ln, 0, field=field, indoor=indoor, photo_stream=stream)

    base = photos(lat, lng, 1, outdoor)
    near = cosine(base, photos(near_lat, near_lng, 2, outdoor))
    far = cosine(base, photos(far_lat, far_lng, 3, outdoor))
    assert near.mean() > 0.3 and abs(far.mean()) < 0.05
    assert (near > far).mean() > 0.9

    indoor = ~outdoor
    base_in = photos(lat, lng, 1, indoor)
    near_in = cosine(base_in, photos(near_lat, near_lng, 2, indoor))
    assert abs(near_in.mean()) < 0.05


def test_feature_scale_and_indoor_share(mp16):
    lat, lng = mp16[0][:20000], mp16[1][:20000]
    sim = sd.simulate_photos_detailed(lat, lng, seed=3, model=sd.FeatureModel(dim=64))
    # Binomial(20000, 0.3): 5 standard deviations is ~0.016.
    assert abs(sim.indoor.mean() - 0.3) < 0.016
    for kind in (sim.indoor, ~sim.indoor):
        assert abs(sim.embeddings[kind].var() - 1.0) < 0.05
        mean_norm_sq = (sim.embeddings[kind].astype(np.float64) ** 2).sum(1).mean()
        assert abs(mean_norm_sq / 64 - 1.0) < 0.05


def test_location_signal_is_a_fixed_function_of_location_and_seed(field):
    lat, lng = np.array([48.8566, -33.9, 35.68]), np.array([2.3522, 18.4, 139.69])
    one = field.signal(lat, lng)
    # The signal of a point does not depend on which other points are evaluated with it.
    np.testing.assert_array_equal(one[1:2], field.signal(lat[1:2], lng[1:2]))
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)
    # The model's formula: outdoor = sqrt(rho * dim) * signal + sqrt(1 - rho) * z, indoor = z (same stream, same z).
    outdoor = sd.simulate_photos(lat, lng, 0, field=field, photo_stream=5, indoor=np.zeros(3, bool))
    indoor = sd.simulate_photos(lat, lng, 0, field=field, photo_stream=5, indoor=np.ones(3, bool))
    np.testing.assert_allclose(outdoor - np.sqrt(0.5) * indoor, np.sqrt(0.5 * 128) * one, atol=1e-4)
    other_stream = sd.simulate_photos(lat, lng, 0, field=field, photo_stream=6, indoor=np.zeros(3, bool))
    assert np.abs(other_stream - outdoor).mean() > 0.5


def near_surface_vertices(field, k, mp16, n_points=4000):
    """Distinct street-scale anchor vertices around MP-16 photos, and which of them lie on the surface."""
    xyz_km = latlng_to_xyz(mp16[0][:n_points], mp16[1][:n_points]) * EARTH_RADIUS_KM
    vertices, _ = field.anchors(k, xyz_km)
    vertices = np.unique(vertices.reshape(-1, 3), axis=0)
    radius = np.linalg.norm(field.vertex_xyz_km(k, vertices), axis=1)
    on_surface = np.abs(radius - EARTH_RADIUS_KM) < 0.01 * field.scales[k].length_km
    return vertices, on_surface


def test_lookalikes_exist_far_apart_and_share_their_code(field, mp16):
    k = [s.name for s in field.scales].index("street")
    vertices, on_surface = near_surface_vertices(field, k, mp16)
    lookalike, twin = field.twins(k, vertices)
    share = lookalike.mean()
    assert len(vertices) > 20000
    # 10% are drawn as look-alikes; a few lose all their draws (target too close or itself a look-alike).
    assert 0.07 < share <= 0.105, share

    here = field.vertex_xyz_km(k, vertices[lookalike])
    there = field.vertex_xyz_km(k, twin[lookalike])
    here_lat, here_lng = xyz_to_latlng(here)
    there_lat, there_lng = xyz_to_latlng(there)
    assert haversine_km(here_lat, here_lng, there_lat, there_lng).min() >= 2500
    twin_is_lookalike, _ = field.twins(k, twin[lookalike])
    assert not twin_is_lookalike.any()
    np.testing.assert_array_equal(
        field.code_rows(k, vertices[lookalike]), field.code_rows(k, twin[lookalike])
    )
    np.testing.assert_array_equal(
        field.code_rows(k, vertices[~lookalike]), field.code_rows(k, twin[~lookalike])
    )

    # A photo standing on a look-alike anchor has the street look of a place >= 2500 km away.
    pick = np.flatnonzero(lookalike & on_surface)[:50]
    assert len(pick) >= 10
    at = field.vertex_xyz_km(k, vertices[pick])
    at *= EARTH_RADIUS_KM / np.linalg.norm(at, axis=1, keepdims=True)
    street = field.scale_field(k, at)
    twin_codes = field.codebook[field.code_rows(k, twin[pick])]
    assert cosine(street, twin_codes).min() > 0.95

    # Without look-alikes the same photos look like themselves, not like the far place.
    plain = sd.LocationField(seed=0, model=sd.FeatureModel(lookalike_fraction=0.0))
    assert not plain.twins(k, vertices)[0].any()
    assert cosine(plain.scale_field(k, at), twin_codes).max() < 0.5


def test_bad_locations_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="photo 1 has an invalid location"):
        sd.simulate_photos([10.0, np.nan], [0.0, 0.0], seed=0, model=sd.FeatureModel(dim=8, lookalike_fraction=0.0))
    with pytest.raises(ValueError, match="photo 0 has an invalid location lat=95"):
        sd.simulate_photos([95.0], [0.0], seed=0, model=sd.FeatureModel(dim=8, lookalike_fraction=0.0))


# -- the scene-label sample ------------------------------------------------------------------------------


def test_scene_features_match_the_csv_labels_and_the_split_is_deterministic(tmp_path):
    paths = sd.make_scene_sample(tmp_path / "a", seed=0, test_fraction=0.2)
    train, test = pq.read_table(paths["train"]), pq.read_table(paths["test"])
    for table in (train, test):
        assert table.schema.equals(FEATURES, check_metadata=False)
    rows = {r["name"]: r for r in read_csv_rows(data_paths.yfcc25600_places365())}
    ids_train, ids_test = train.column(c.PHOTO_ID).to_pylist(), test.column(c.PHOTO_ID).to_pylist()
    assert not set(ids_train) & set(ids_test)
    assert set(ids_train) | set(ids_test) == set(rows)
    # Binomial(25600, 0.2): 5 standard deviations is ~0.0125.
    assert abs(len(ids_test) / len(rows) - 0.2) < 0.0125

    rng = np.random.default_rng(0)
    for table, ids in ((train, ids_train), (test, ids_test)):
        emb = table.column(c.EMBEDDING)
        lat, lng = table.column(c.LAT).to_numpy(), table.column(c.LNG).to_numpy()
        for i in rng.choice(len(ids), 200, replace=False):
            row = rows[ids[i]]
            vec = np.asarray(emb[int(i)].as_py(), dtype=np.float64)
            assert vec.size == 365 + 16 + 3 + 3 == SCENE_DIM
            assert np.flatnonzero(vec[:365]).tolist() == [int(row["S365_Label"])]
            assert np.flatnonzero(vec[365:381]).tolist() == [int(row["S16_Label"])]
            assert np.flatnonzero(vec[381:384]).tolist() == [int(row["S3_Label"])]
            want = [float(row[p]) for p in ("Prob_indoor", "Prob_natural", "Prob_urban")]
            np.testing.assert_allclose(vec[384:], want, rtol=1e-6, atol=1e-12)
            assert (lat[i], lng[i]) == (float(row["lat"]), float(row["lon"]))

    again = sd.make_scene_sample(tmp_path / "b", seed=0, test_fraction=0.2)
    assert pq.read_table(again["test"]).column(c.PHOTO_ID).to_pylist() == ids_test
    other = sd.is_held_out(ids_test, seed=1, test_fraction=0.2)
    assert 0.1 < other.mean() < 0.35  # another seed gives another split


def test_scene_labels_out_of_range_are_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    header = "name,AUTHOR,lat,lon,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban\n"
    bad.write_text(header + "a.jpg,x,1.0,2.0,0,5,21,0.9,0.05,0.05\nb.jpg,x,1.0,2.0,0,16,21,0.9,0.05,0.05\n")
    with pytest.raises(ValueError, match="row 1 column S16_Label = 16 is not a class in 0..15"):
        sd.scene_features(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("name,lat,lon,S3_Label\na.jpg,1,2,0\n")
    with pytest.raises(ValueError, match="no column 'S365_Label'"):
        sd.scene_features(missing)
