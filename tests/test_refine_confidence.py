"""partition_gen.refine (index, search, settings) against brute force, and partition_gen.confidence calibration."""

from __future__ import annotations

import os

import numpy as np
import pytest

from partition_gen import confidence, refine
from partition_gen.combine import Combiner
from partition_gen.geo import xyz_to_latlng
from partition_gen.partitions import build_partitions
from tests.test_partitions import random_sets

DIM = 24


@pytest.fixture(scope="module")
def world():
    assignments, n_images, xyz_sum = random_sets(4, n_nodes=300, ks=(7, 12, 30))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    rng = np.random.default_rng(9)
    node_code = rng.normal(size=(300, DIM))
    node = rng.integers(0, 300, size=3000)
    emb = (node_code[node] + rng.normal(size=(3000, DIM)) * 0.8).astype(np.float32)
    lat, lng = xyz_to_latlng(xyz_sum[node] + rng.normal(0, 0.3, (3000, 3)))
    labels = {name: a[node] for name, a in assignments.items()}
    index = refine.build_index(emb, lat, lng, refine.photo_partitions(parts, labels), parts, code_bytes=8, seed=1)
    return {"parts": parts, "index": index, "labels": labels, "lat": lat, "lng": lng, "emb": emb,
            "node_code": node_code, "assignments": assignments, "rng": rng}


def test_photo_partitions_match_a_dict_of_tuples(world):
    parts, labels = world["parts"], world["labels"]
    lookup = {tuple(row): i for i, row in enumerate(parts.tuples.tolist())}
    want = [lookup[tuple(labels[n][j] for n in parts.set_names)] for j in range(len(labels["set1"]))]
    np.testing.assert_array_equal(refine.photo_partitions(parts, labels), want)
    with pytest.raises(ValueError, match="no labels for sets"):
        refine.photo_partitions(parts, {"set1": labels["set1"]})


def _brute_force(index, method_tuples_of_photo, method_tuples, topk, queries, k, threshold):
    """Decode every code, cosine with each query over the photos of its top-k method partitions."""
    m, _, dsub = index.centroids.shape
    recon = index.centroids[np.arange(m)[None, :], index.codes.astype(int)].reshape(index.n_photos, m * dsub)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    q = np.pad(q, ((0, 0), (0, m * dsub - q.shape[1])))
    lookup = {tuple(row): i for i, row in enumerate(method_tuples.tolist())}
    photo_part = np.array([lookup[t] for t in method_tuples_of_photo])
    out = []
    for b in range(len(q)):
        cand = np.flatnonzero(np.isin(photo_part, topk[b, :k]))
        sims = recon[cand] @ q[b]
        j = cand[np.argmax(sims)]
        out.append((float(sims.max()), bool(sims.max() >= threshold), float(index.lat[j]), float(index.lng[j])))
    return out


@pytest.mark.parametrize("subset", [("set1", "set2", "set3"), ("set1", "set3")])
def test_refinement_matches_brute_force_search(world, subset):
    parts, index, rng = world["parts"], world["index"], world["rng"]
    method_parts = parts.restrict(subset)
    probs = {name: rng.dirichlet(np.ones(k) * 0.3, size=40) for name, k in zip(parts.set_names, parts.n_classes)}
    pred = Combiner(method_parts, top_k=4).predict(probs)
    queries = (world["node_code"][rng.integers(0, 300, 40)] + rng.normal(size=(40, DIM))).astype(np.float32)
    refiner = refine.Refiner(index, method_parts, parts)
    # Index rows are sorted by partition: map each row back to its photo's method tuple.
    full_of_row = np.repeat(np.arange(parts.n_partitions), np.diff(index.indptr))
    cols = [parts.set_index(n) for n in subset]
    tuples_of_row = [tuple(t) for t in parts.tuples[full_of_row][:, cols].tolist()]
    sims = []
    for k in (1, 3):
        got = refiner.refine(pred.topk_ids, pred.lat, pred.lng, queries, top_partitions=k, min_similarity=0.35)
        want = _brute_force(index, tuples_of_row, method_parts.tuples, pred.topk_ids, queries, k, 0.35)
        np.testing.assert_allclose(got.similarity, [w[0] for w in want], atol=1e-5)
        near = np.abs(got.similarity - 0.35) < 1e-5
        np.testing.assert_array_equal(got.moved[~near], np.array([w[1] for w in want])[~near])
        for b in np.flatnonzero(got.moved & ~near):
            assert (got.lat[b], got.lng[b]) == pytest.approx(want[b][2:], abs=1e-4)
        np.testing.assert_array_equal(got.lat[~got.moved], pred.lat[~got.moved])
        sims.append(got.similarity)
    # More partitions, more candidates: the best similarity can only grow.
    assert (sims[1] >= sims[0] - 1e-6).all() and (sims[1] > sims[0]).any()


def test_best_neighbours_of_every_k_from_one_search_equal_a_search_per_k(world):
    parts, index, rng = world["parts"], world["index"], world["rng"]
    probs = {name: rng.dirichlet(np.ones(k) * 0.3, size=60) for name, k in zip(parts.set_names, parts.n_classes)}
    pred = Combiner(parts, top_k=6).predict(probs)
    queries = (world["node_code"][rng.integers(0, 300, 60)] + rng.normal(size=(60, DIM))).astype(np.float32)
    refiner = refine.Refiner(index, parts)
    per_k = refiner.best_neighbours_per_k(pred.topk_ids, queries, [6, 1, 3])
    assert sorted(per_k) == [1, 3, 6]
    # Searched 7 queries at a time (chunks that split the batch unevenly) or all at once: the same answers.
    for chunk in (7, 10**6):
        chunked = refiner.best_neighbours_per_k(pred.topk_ids, queries, [6, 1, 3], chunk=chunk)
        for k in per_k:
            np.testing.assert_array_equal(chunked[k][0], per_k[k][0])
            np.testing.assert_array_equal(chunked[k][1], per_k[k][1])
    for k, (sim, row) in per_k.items():
        want_sim, want_row = refiner.best_neighbours(pred.topk_ids[:, :k], queries)
        np.testing.assert_array_equal(sim, want_sim)
        np.testing.assert_array_equal(row, want_row)
        # The chosen row is in one of the image's first k partitions.
        part_of_row = np.repeat(np.arange(parts.n_partitions), np.diff(index.indptr))
        assert all(part_of_row[r] in pred.topk_ids[b, :k] for b, r in enumerate(row) if r >= 0)


def test_pq_similarity_tracks_exact_cosine_and_index_is_compact(world):
    index, emb = world["index"], world["emb"]
    refiner = refine.Refiner(index, world["parts"])
    q = emb[:200]
    rows = np.arange(index.n_photos)[::7]
    img = np.repeat(np.arange(len(q)), len(rows))
    approx = refiner.similarities(q, img, np.tile(rows, len(q)))
    # Exact cosine of the same (query, photo) pairs: photos in index order are emb[order].
    order = np.argsort(refine.photo_partitions(world["parts"], world["labels"]), kind="stable")
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    exact = (unit[:200] @ unit[order][rows].T).ravel()
    assert np.corrcoef(approx, exact)[0, 1] > 0.8
    assert index.codes.dtype == np.uint8 and index.codes.shape == (3000, 8)
    # Codebooks in float16: 8 sub-vectors x 256 centroids x 3 dims x 2 bytes.
    assert index.centroids.dtype == np.float16 and index.fixed_bytes() == 8 * 256 * 3 * 2
    # codes 8 + lat/lng 8 + indptr + codebooks amortised.
    assert index.bytes_per_photo() == pytest.approx(16 + (index.indptr.nbytes + index.centroids.nbytes) / 3000)


def test_index_round_trips_and_refuses_other_partitions(world, tmp_path):
    index = world["index"].with_settings(methods={"CPlaNet[1-3]": {"top_partitions": 2, "min_similarity": 0.1}})
    assert refine.load_index(str(tmp_path)) is None
    refine.save_index(index, refine.index_dir(str(tmp_path)))
    back = refine.load_index(str(tmp_path))
    for name in ("centroids", "codes", "lat", "lng", "indptr"):
        np.testing.assert_array_equal(getattr(back, name), getattr(index, name))
    assert back.settings == index.settings and back.partitions_id == index.partitions_id
    other = build_partitions(*random_sets(5, n_nodes=100, ks=(3, 4, 5)), sets_checksum="y")
    with pytest.raises(ValueError, match="built for partitions"):
        refine.Refiner(back, other)


def test_choose_settings_never_loses_to_eq4_on_the_data_it_chose_on(world):
    parts, index, rng = world["parts"], world["index"], world["rng"]
    node = rng.integers(0, 300, 200)
    queries = (world["node_code"][node] + rng.normal(size=(200, DIM)) * 0.8).astype(np.float32)
    probs = {name: np.eye(k)[a[node]] * 0.5 + 0.5 / k for (name, a), k in zip(world["assignments"].items(), parts.n_classes)}
    pred = Combiner(parts, top_k=5).predict(probs)
    true_lat, true_lng = parts.node_lat[node], parts.node_lng[node]
    chosen = refine.choose_settings(refine.Refiner(index, parts), pred.topk_ids, pred.lat, pred.lng, queries,
                                    true_lat, true_lng, (1, 25, 200))
    assert chosen["mean_accuracy"] >= chosen["mean_accuracy_eq4"]


def _synthetic(rng, n):
    """Features with a known effect on the error scale: error = scale(x) * |Cauchy-ish| draw."""
    x = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0, 2, n), rng.integers(0, 2, n)])
    scale = np.exp(1 + 3 * x[:, 0] - x[:, 1] + 2 * x[:, 2])
    return x, scale * np.abs(rng.standard_t(3, size=n))


def test_calibrated_radii_hold_their_shares_on_held_out_data():
    rng = np.random.default_rng(0)
    x, err = _synthetic(rng, 20_000)
    cal = confidence.fit(x, err)
    x2, err2 = _synthetic(rng, 20_000)
    r50, r90 = cal.radii(x2)
    assert 0.47 <= confidence.coverage(err2, r50) <= 0.53
    assert 0.87 <= confidence.coverage(err2, r90) <= 0.93
    # Conditional, not just overall: the shares hold for the hard and the easy photos alike.
    for group in (x2[:, 2] == 1, x2[:, 2] == 0):
        assert 0.42 <= confidence.coverage(err2[group], r50[group]) <= 0.58
        assert 0.84 <= confidence.coverage(err2[group], r90[group]) <= 0.96
    # And the radii follow difficulty: a constant radius would give the hard group far less coverage.
    assert np.median(r50[x2[:, 2] == 1]) > 3 * np.median(r50[x2[:, 2] == 0])
    back = confidence.Calibration.from_json(cal.to_json())
    np.testing.assert_array_equal(back.radii(x2)[1], r90)


def test_combiner_features_measure_share_entropy_and_agreement():
    tuples = np.array([[0, 1], [1, 1], [2, 0]])
    heads = [np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]]), np.array([[0.9, 0.1], [0.2, 0.8]])]
    f = confidence.combiner_features(np.array([[2, 0], [1, 0]]), np.array([[3.0, 1.0], [1.0, 1.0]]), tuples, heads)
    assert f[0, 0] == pytest.approx(0.75) and f[1, 0] == pytest.approx(0.5)
    assert f[1, 1] == pytest.approx(np.log(2)) and f[0, 1] < f[1, 1]
    assert f[0, 2] == 1.0 and f[1, 2] == 0.5  # photo 1: head 1 says class 0, the top partition has class 1
    assert f[0, 3] == pytest.approx(0.8)


def test_batch_predict_adds_refined_rows_and_radii_when_the_model_has_an_index(world, tmp_path):
    """CombineHeads with a model dir holding refine/: "+R" rows equal a direct Refiner call, radii a direct
    Calibration lookup; evaluation then reports the share of photos within them."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import PredictionResult
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from partition_gen.evaluation import evaluate
    from pipelines.batch_predict import VALID, CombineHeads

    parts, rng = world["parts"], world["rng"]
    name = "CPlaNet[1-3]"
    settings = {"top_partitions": 3, "min_similarity": 0.3}
    model_dir = str(tmp_path / "model")
    x, err = _synthetic(rng, 2000)
    cal = confidence.fit(np.column_stack([x, np.zeros((2000, 3))]), err)
    confidence.write_calibrations(refine.index_dir(model_dir), {name: cal, name + "+R": cal})
    assert set(confidence.load_calibrations(refine.index_dir(model_dir))) == {name, name + "+R"}
    refine.save_index(world["index"].with_settings(methods={name: settings}), refine.index_dir(model_dir))

    node = rng.integers(0, 300, 16)
    emb = (world["node_code"][node] + rng.normal(size=(16, DIM)) * 0.8).astype(np.float32)
    probs = {n: rng.dirichlet(np.ones(k) * 0.3, size=16) for n, k in zip(parts.set_names, parts.n_classes)}
    elements = [(f"p{i}", PredictionResult(emb[i], {n: probs[n][i] for n in probs}, "m")) for i in range(16)]

    pred = Combiner(parts, top_k=20).predict(probs)
    want = refine.Refiner(world["index"], parts).refine(pred.topk_ids, pred.lat, pred.lng, emb, **settings)
    heads = [probs[n] for n in parts.set_names]
    f_plain = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], parts.tuples, heads)
    f_refined = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], parts.tuples, heads,
                                             want.moved, want.similarity)

    def check(rows):
        by = {(r["photo_id"], r["method"]): r for r in rows}
        assert len(by) == 32
        for i in range(16):
            plain, refined = by[(f"p{i}", name)], by[(f"p{i}", name + "+R")]
            assert (plain["lat"], plain["lng"]) == pytest.approx((pred.lat[i], pred.lng[i]))
            assert (refined["lat"], refined["lng"]) == pytest.approx((want.lat[i], want.lng[i]))
            assert len(plain["topk_partition_ids"]) == 5
            assert plain["radius50_km"] == pytest.approx(cal.radii(f_plain[i : i + 1])[0][0])
            assert refined["radius90_km"] == pytest.approx(cal.radii(f_refined[i : i + 1])[1][0])

    with TestPipeline() as p:
        out = (p | beam.Create(elements)
               | CombineHeads(None, name, top_k=5, partitions=parts, model_dir=model_dir))
        assert_that(out[VALID] | beam.combiners.ToList(), lambda lists: check(lists[0]))
    assert want.moved.any()

    # Evaluation: the share of photos within their radius.
    d = np.array([1.0, 5.0, 20.0, 100.0])
    truth_lat = np.zeros(4)
    report = evaluate([f"q{i}" for i in range(4)], ["M"] * 4, np.zeros(4), d / 111.195, [f"q{i}" for i in range(4)],
                      truth_lat, np.zeros(4), pred_radius50_km=[2.0, 2.0, 2.0, np.nan],
                      pred_radius90_km=[50.0, 50.0, 50.0, 50.0])
    assert report["methods"]["M"]["within_radius50"] == pytest.approx(1 / 3)
    assert report["methods"]["M"]["within_radius90"] == pytest.approx(3 / 4)


def test_eval_split_in_chunks_matches_one_pass_over_all_probabilities(world):
    """build_refine_index predicts and combines the eval split a chunk at a time (the heads' probabilities of
    a whole large split do not fit in memory); every method's prediction and features must not depend on it."""
    from partition_gen.evaluation import standard_methods
    from pipelines.build_refine_index import predict_eval_split

    parts, rng = world["parts"], world["rng"]
    weights = {n: rng.normal(size=(DIM, k)) for n, k in zip(parts.set_names, parts.n_classes)}

    class SoftmaxHeads:  # stands in for the exported model: one softmax head per set over the embedding
        def predict(self, x, batch_size, verbose):
            out = {}
            for n, w in weights.items():
                z = np.exp(x @ w - (x @ w).max(axis=1, keepdims=True))
                out[n] = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
            return out

    emb = world["emb"][:301]
    combiners = {m.name: m.combiner(parts, top_k=refine.CALIBRATION_TOP_K) for m in standard_methods(parts.set_names)}
    got = predict_eval_split(SoftmaxHeads(), parts.set_names, combiners, emb, chunk=64)
    probs = SoftmaxHeads().predict(emb, 1024, 0)
    for name, combiner in combiners.items():
        pred = combiner.predict(probs)
        heads = [probs[n] for n in combiner.partitions.set_names]
        want = confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], combiner.partitions.tuples, heads)
        np.testing.assert_array_equal(got[name].topk_ids, pred.topk_ids)
        np.testing.assert_allclose(got[name].lat, pred.lat)
        np.testing.assert_allclose(got[name].features, want)
        moved = rng.random(len(emb)) < 0.5
        sim = np.where(rng.random(len(emb)) < 0.1, np.nan, rng.random(len(emb)))
        np.testing.assert_allclose(
            confidence.with_refinement(got[name].features, moved, sim),
            confidence.combiner_features(pred.topk_ids, pred.topk_scores[:, :5], combiner.partitions.tuples, heads,
                                         moved, sim))
    assert len(combiners) > 3


def test_an_index_is_reused_only_for_the_same_photos_and_partitions(world, tmp_path):
    """build_refine_index --index_from (a chain that differs only in training) takes another model's codes
    only when they encode exactly this run's training photos over these partitions at this code size."""
    from pipelines.build_refine_index import reusable_index

    parts, labels, index = world["parts"], world["labels"], world["index"]
    model_dir = str(tmp_path / "other_model")
    refine.save_index(index.with_settings(methods={"CPlaNet[1-3]": {"top_partitions": 3}}), refine.index_dir(model_dir))
    train = {"lat": world["lat"], "lng": world["lng"], "embedding": world["emb"]}
    photo_part = refine.photo_partitions(parts, labels)

    got = reusable_index(model_dir, parts, train, photo_part, code_bytes=8)
    assert got is not None and got.settings["methods"] == {}  # the other model's settings are not carried over
    np.testing.assert_array_equal(got.codes, index.codes)

    moved = {**train, "lat": np.r_[train["lat"][:-1], train["lat"][-1] + 0.01]}
    assert reusable_index(model_dir, parts, moved, photo_part, code_bytes=8) is None
    fewer = {k: v[:-1] for k, v in train.items()}
    assert reusable_index(model_dir, parts, fewer, photo_part[:-1], code_bytes=8) is None
    shuffled = np.r_[photo_part[1:], photo_part[:1]]
    assert reusable_index(model_dir, parts, train, shuffled, code_bytes=8) is None
    assert reusable_index(model_dir, parts, train, photo_part, code_bytes=16) is None
    assert reusable_index(str(tmp_path / "nothing"), parts, train, photo_part, code_bytes=8) is None
    damaged = str(tmp_path / "damaged_model")
    refine.save_index(index, refine.index_dir(damaged))
    with open(os.path.join(refine.index_dir(damaged), refine.INDEX_FILE), "ab") as f:
        f.write(b"junk")
    assert reusable_index(damaged, parts, train, photo_part, code_bytes=8) is None
    other = build_partitions(*random_sets(5, n_nodes=300, ks=(7, 12, 30)), sets_checksum="y")
    assert reusable_index(model_dir, other, train, photo_part, code_bytes=8) is None


def test_a_large_eval_split_is_sampled_for_calibration_with_every_column_aligned():
    from pipelines.build_refine_index import calibration_sample

    n = 1000
    split = {"photo_id": np.array([f"p{i}" for i in range(n)]), "lat": np.arange(n) * 0.1,
             "lng": -np.arange(n) * 0.1, "embedding": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
             "labels": {"set1": np.arange(n) % 7, "set2": np.arange(n) % 11}}
    assert calibration_sample(split, n, seed=0) is split
    got = calibration_sample(split, 300, seed=0)
    rows = np.array([int(p[1:]) for p in got["photo_id"]])
    assert len(rows) == len(set(rows)) == 300 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(got["lat"], rows * 0.1)
    np.testing.assert_array_equal(got["lng"], -rows * 0.1)
    np.testing.assert_array_equal(got["embedding"][:, 0], rows * 3)
    np.testing.assert_array_equal(got["labels"]["set2"], rows % 11)
    np.testing.assert_array_equal(calibration_sample(split, 300, seed=0)["photo_id"], got["photo_id"])
    assert not np.array_equal(calibration_sample(split, 300, seed=1)["photo_id"], got["photo_id"])
