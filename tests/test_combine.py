"""The partition combiner against a direct per-node implementation of Eq. 3 and Eq. 4."""

from __future__ import annotations

import numpy as np
import pytest

from partition_gen.combine import NORMALIZED_SUM, SIMPLE_SUM, Combiner, Method
from partition_gen.geo import latlng_to_xyz, xyz_to_latlng
from partition_gen.partitions import build_partitions
from tests.test_partitions import random_sets

TIE_RTOL = 1e-12


def per_node_reference(assignments, node_xyz_sum, probs, rule):
    """Eq. 3 and Eq. 4 written out node by node, image by image, with no partitions at all."""
    names = list(assignments)
    n_nodes = node_xyz_sum.shape[0]
    batch = probs[names[0]].shape[0]
    argmax_nodes, lats, lngs, best = [], [], [], []
    for b in range(batch):
        scores = np.zeros(n_nodes)
        for name in names:
            geoscore = np.array([probs[name][b, assignments[name][g]] for g in range(n_nodes)], dtype=np.float64)
            scores += geoscore / geoscore.sum() if rule == NORMALIZED_SUM else geoscore
        top = scores.max()
        nodes = np.flatnonzero(scores >= top - TIE_RTOL * abs(top))
        lat, lng = xyz_to_latlng(node_xyz_sum[nodes].sum(axis=0))
        argmax_nodes.append(nodes)
        lats.append(float(lat))
        lngs.append(float(lng))
        best.append(top)
    return argmax_nodes, np.array(lats), np.array(lngs), np.array(best), scores


def random_probs(rng, ks, batch, concentration):
    return {f"set{i + 1}": rng.dirichlet(np.full(k, concentration), size=batch).astype(np.float32) for i, k in enumerate(ks)}


@pytest.mark.parametrize("rule", [NORMALIZED_SUM, SIMPLE_SUM])
@pytest.mark.parametrize("seed,concentration", [(0, 0.05), (1, 0.5), (2, 5.0)])
@pytest.mark.parametrize("path", ["auto", "pruned", "compiled", "dense"])
def test_combiner_matches_per_node_equations(seed, concentration, rule, path):
    ks = (7, 12, 30)
    assignments, n_images, xyz_sum = random_sets(seed, n_nodes=300, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    rng = np.random.default_rng(100 + seed)
    probs = random_probs(rng, ks, batch=12, concentration=concentration)
    options = {"auto": {}, "dense": {"dense_fraction": 0.0},
               "pruned": {"prune_ratio": 0.9, "dense_fraction": 10.0, "kernel_candidates_per_class": np.inf},
               "compiled": {"kernel_candidates_per_class": 0.0}}
    pred = Combiner(parts, rule=rule, top_k=6, **options[path]).predict(probs)
    ref_nodes, ref_lat, ref_lng, ref_best, _ = per_node_reference(assignments, xyz_sum, probs, rule)
    for b in range(12):
        nodes = np.flatnonzero(np.isin(parts.node_partition, pred.argmax_partitions[b]))
        np.testing.assert_array_equal(nodes, ref_nodes[b])
    np.testing.assert_allclose(pred.lat, ref_lat, atol=1e-9)
    np.testing.assert_allclose(pred.lng, ref_lng, atol=1e-9)
    np.testing.assert_allclose(pred.score, ref_best, rtol=1e-12)

    # Top-k: the k best partitions by a full sort of every partition's score (one node stands for it).
    dense = Combiner(parts, rule=rule).scores(probs)
    for b in range(12):
        expected = np.lexsort((np.arange(parts.n_partitions), -dense[b]))[:6]
        np.testing.assert_array_equal(pred.topk_ids[b], expected)
        np.testing.assert_allclose(pred.topk_scores[b], dense[b, expected], rtol=1e-12)
    lat, lng = parts.centers_latlng()
    np.testing.assert_allclose(pred.topk_lat, lat[pred.topk_ids])
    np.testing.assert_allclose(pred.topk_lng, lng[pred.topk_ids])


def test_tied_partitions_are_all_arg_max_and_their_images_are_averaged():
    # 2 x 2 sets over 4 nodes: four partitions, uniform probabilities make all four tie.
    assignments = {"set1": np.array([0, 0, 1, 1], np.int32), "set2": np.array([0, 1, 0, 1], np.int32)}
    n_images = np.array([1, 3, 1, 1])
    lat, lng = np.array([0.0, 10.0, 0.0, 10.0]), np.array([0.0, 0.0, 10.0, 10.0])
    xyz_sum = latlng_to_xyz(lat, lng) * n_images[:, None]
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = {"set1": np.array([[0.5, 0.5]]), "set2": np.array([[0.5, 0.5]])}
    pred = Combiner(parts).predict(probs)
    assert pred.n_argmax[0] == 4
    expected = xyz_to_latlng(xyz_sum.sum(axis=0))
    assert (pred.lat[0], pred.lng[0]) == pytest.approx((float(expected[0]), float(expected[1])), abs=1e-12)
    # Image-weighted, on the sphere: not the plain mean of the node coordinates (5, 5).
    assert pred.lat[0] > 5.5


def test_normalized_and_simple_sum_disagree_when_one_set_has_large_classes():
    """The paper's argument: SimpleSum favours the classifier whose classes cover many cells."""
    coarse = np.array([0] * 5 + [1] * 5, np.int32)  # two classes of five nodes
    fine = np.arange(10, dtype=np.int32)  # ten single-node classes
    assignments = {"set1": coarse, "set2": fine}
    xyz_sum = latlng_to_xyz(np.zeros(10), np.arange(10.0))
    parts = build_partitions(assignments, np.ones(10), xyz_sum, sets_checksum="x")
    fine_probs = np.full(10, 0.5 / 9)
    fine_probs[7] = 0.5
    probs = {"set1": np.array([[0.9, 0.1]]), "set2": fine_probs[None, :]}
    simple = Combiner(parts, rule=SIMPLE_SUM).predict(probs)
    normalized = Combiner(parts, rule=NORMALIZED_SUM).predict(probs)
    simple_nodes = np.flatnonzero(np.isin(parts.node_partition, simple.argmax_partitions[0]))
    normalized_nodes = np.flatnonzero(np.isin(parts.node_partition, normalized.argmax_partitions[0]))
    # SimpleSum: 0.9 + 0.056 on the coarse class beats 0.1 + 0.5 on node 7; NormalizedSum (Z=5 vs 1) does not.
    assert set(simple_nodes) == {0, 1, 2, 3, 4}
    assert list(normalized_nodes) == [7]
    for rule, pred in ((SIMPLE_SUM, simple), (NORMALIZED_SUM, normalized)):
        ref_nodes, ref_lat, ref_lng, _, _ = per_node_reference(assignments, xyz_sum, probs, rule)
        assert set(ref_nodes[0]) == set(np.flatnonzero(np.isin(parts.node_partition, pred.argmax_partitions[0])))
        assert pred.lng[0] == pytest.approx(ref_lng[0], abs=1e-9)


def test_single_set_method_is_its_arg_max_class_and_image_weighted_centre():
    ks = (7, 12, 30)
    assignments, n_images, xyz_sum = random_sets(7, n_nodes=300, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = random_probs(np.random.default_rng(3), ks, batch=20, concentration=0.3)
    pred = Method("ClassSet 2", ("set2",)).combiner(parts, top_k=3).predict(probs)
    best = probs["set2"].argmax(axis=1)
    for b in range(20):
        nodes = assignments["set2"] == best[b]
        lat, lng = xyz_to_latlng(xyz_sum[nodes].sum(axis=0))
        assert (pred.lat[b], pred.lng[b]) == pytest.approx((float(lat), float(lng)), abs=1e-9)
        np.testing.assert_array_equal(pred.topk_ids[b], np.argsort(-probs["set2"][b], kind="stable")[:3])


def test_bad_probabilities_are_refused_with_the_set_named():
    assignments, n_images, xyz_sum = random_sets(8, n_nodes=100, ks=(4, 6))
    combiner = Combiner(build_partitions(assignments, n_images, xyz_sum, sets_checksum="x"))
    good = {"set1": np.full((2, 4), 0.25), "set2": np.full((2, 6), 1 / 6)}
    with pytest.raises(ValueError, match="set 'set2'.*expected \\(batch, 6\\)"):
        combiner.predict({**good, "set2": np.ones((2, 5))})
    with pytest.raises(ValueError, match="'set1' hold NaN"):
        combiner.predict({**good, "set1": np.array([[np.nan, 0, 0, 1], [1, 0, 0, 0]])})
    with pytest.raises(ValueError, match="no probabilities for geoclass set 'set2'"):
        combiner.predict({"set1": good["set1"]})


def test_peaked_probabilities_are_decided_without_dense_scoring(monkeypatch):
    ks = (7, 12, 30)
    assignments, n_images, xyz_sum = random_sets(9, n_nodes=300, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = random_probs(np.random.default_rng(9), ks, batch=16, concentration=0.02)
    combiner = Combiner(parts, top_k=2, prune_ratio=0.5, dense_fraction=10.0, kernel_candidates_per_class=np.inf)

    def no_dense(*args, **kwargs):
        raise AssertionError("dense scoring used")

    monkeypatch.setattr(combiner, "_predict_dense", no_dense)
    pred = combiner.predict(probs)
    ref_nodes, ref_lat, _, _, _ = per_node_reference(assignments, xyz_sum, probs, NORMALIZED_SUM)
    np.testing.assert_allclose(pred.lat, ref_lat, atol=1e-9)


def test_uniform_and_all_zero_rows_terminate_with_every_partition_tied():
    assignments, n_images, xyz_sum = random_sets(10, n_nodes=120, ks=(4, 6))
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = {"set1": np.zeros((2, 4)), "set2": np.zeros((2, 6))}
    pred = Combiner(parts, rule=SIMPLE_SUM, dense_fraction=10.0).predict(probs)
    assert list(pred.n_argmax) == [parts.n_partitions] * 2
    expected = xyz_to_latlng(xyz_sum.sum(axis=0))
    assert pred.lat[0] == pytest.approx(float(expected[0]), abs=1e-9)


def test_progressive_map_steps_match_the_per_node_reference(tmp_path):
    from partition_gen.figures import plot_progressive_map

    ks = (7, 12, 30)
    assignments, n_images, xyz_sum = random_sets(12, n_nodes=300, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = {k: v[0] for k, v in random_probs(np.random.default_rng(12), ks, batch=1, concentration=0.2).items()}
    steps = plot_progressive_map(parts, probs, 10.0, 20.0, str(tmp_path / "fig4.png"), photo_id="p1")
    assert open(tmp_path / "fig4.png", "rb").read(4) == b"\x89PNG"
    assert [s.set_names for s in steps] == [("set1",), ("set1", "set2"), ("set1", "set2", "set3")]
    for step in steps:
        subset = {n: assignments[n] for n in step.set_names}
        batch = {n: probs[n][None, :] for n in step.set_names}
        ref_nodes, ref_lat, ref_lng, _, _ = per_node_reference(subset, xyz_sum, batch, NORMALIZED_SUM)
        np.testing.assert_array_equal(step.nodes, ref_nodes[0])
        assert (step.lat, step.lng) == pytest.approx((ref_lat[0], ref_lng[0]), abs=1e-9)


@pytest.mark.parametrize("rule", [NORMALIZED_SUM, SIMPLE_SUM])
def test_flat_probabilities_compiled_dense_scoring_is_exact(rule, monkeypatch):
    """Flat probabilities (Dirichlet(1), an untrained model) defeat the threshold bound, so every partition
    is scored: the compiled pass must give the NumPy path's scores bit for bit, and Eq. 3/4 per node."""
    from partition_gen import combine

    ks = (40, 55, 70)
    assignments, n_images, xyz_sum = random_sets(21, n_nodes=400, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = random_probs(np.random.default_rng(21), ks, batch=10, concentration=1.0)
    combiner = Combiner(parts, rule=rule, top_k=5)
    dense_images = []
    original = combiner._predict_dense
    monkeypatch.setattr(
        combiner, "_predict_dense", lambda p, z, images, out: (dense_images.append(images), original(p, z, images, out))
    )
    assert combine._kernel() is not None
    compiled = combiner.predict(probs)
    assert sum(len(i) for i in dense_images) == 10  # every image went the dense way
    monkeypatch.setattr(combine, "_kernel", lambda: None)
    numpy_path = Combiner(parts, rule=rule, top_k=5).predict(probs)
    for field in ("score", "lat", "lng", "n_argmax", "topk_ids", "topk_scores"):
        np.testing.assert_array_equal(getattr(compiled, field), getattr(numpy_path, field))
    ref_nodes, ref_lat, ref_lng, ref_best, _ = per_node_reference(assignments, xyz_sum, probs, rule)
    for b in range(10):
        nodes = np.flatnonzero(np.isin(parts.node_partition, compiled.argmax_partitions[b]))
        np.testing.assert_array_equal(nodes, ref_nodes[b])
    np.testing.assert_allclose(compiled.lat, ref_lat, atol=1e-9)
    np.testing.assert_allclose(compiled.score, ref_best, rtol=1e-12)


@pytest.mark.parametrize("dtypes", ["float32", "float64", "float64,float32,float32"])
def test_flat_rows_over_thousands_of_classes_stop_early_and_stay_exact(dtypes, monkeypatch):
    """Sets of thousands of classes: the compiled search reads rank thresholds from a sorted head of a
    class sample and jumps to the first depth whose bound is below the k-th best score; a uniform row
    has to go past that head to every class. Both must equal the NumPy dense path bit for bit, whatever
    float type each head's probabilities come in (the kernel divides them itself)."""
    from partition_gen import combine

    ks = (2500, 3100, 1900)
    assignments, n_images, xyz_sum = random_sets(5, n_nodes=12_000, ks=ks)
    parts = build_partitions(assignments, n_images, xyz_sum, sets_checksum="x")
    probs = random_probs(np.random.default_rng(5), ks, batch=12, concentration=1.0)
    for p in probs.values():
        p[-1] = np.float32(1.0 / p.shape[1])  # a uniform row: every partition ties
    types = (dtypes.split(",") * 3)[:3]
    probs = {name: p.astype(t) for (name, p), t in zip(probs.items(), types)}
    if "float64" in types:  # values a float32 cannot tell apart, so the order of P is float64's own
        first = next(iter(probs))
        probs[first][0] += np.random.default_rng(6).uniform(0, 1e-12, probs[first].shape[1])
    assert combine._kernel() is not None
    compiled = Combiner(parts, top_k=5).predict(probs)
    monkeypatch.setattr(combine, "_kernel", lambda: None)
    numpy_path = Combiner(parts, top_k=5).predict(probs)
    for field in ("score", "lat", "lng", "n_argmax", "topk_ids", "topk_scores"):
        np.testing.assert_array_equal(getattr(compiled, field), getattr(numpy_path, field))
    for a, b in zip(compiled.argmax_partitions, numpy_path.argmax_partitions):
        np.testing.assert_array_equal(a, b)
    assert compiled.n_argmax[-1] > 1


def test_compiled_search_over_a_set_of_more_classes_than_int16_holds(monkeypatch):
    """The kernel's CSR stores class ids in the narrowest integer type that holds them; a set past
    int16's range (33,000 classes) must switch to int32 ids and still equal the NumPy path bit for bit."""
    from partition_gen import combine

    rng = np.random.default_rng(8)
    n_nodes, ks = 40_000, (33_000, 40)
    assignments = {"set1": rng.permutation(np.arange(n_nodes) % ks[0]).astype(np.int32),
                   "set2": rng.integers(0, ks[1], n_nodes).astype(np.int32)}
    xyz = latlng_to_xyz(np.degrees(np.arcsin(rng.uniform(-1, 1, n_nodes))), rng.uniform(-180, 180, n_nodes))
    parts = build_partitions(assignments, np.ones(n_nodes, np.int64), xyz, sets_checksum="x")
    probs = random_probs(rng, ks, batch=6, concentration=1.0)
    combiner = Combiner(parts, top_k=5, kernel_candidates_per_class=0.0)
    assert combine._kernel() is not None
    compiled = combiner.predict(probs)
    assert combiner._class_index()[1].dtype == np.int32  # the member tuples: class ids past int16
    monkeypatch.setattr(combine, "_kernel", lambda: None)
    numpy_path = Combiner(parts, top_k=5).predict(probs)
    for field in ("score", "lat", "lng", "n_argmax", "topk_ids", "topk_scores"):
        np.testing.assert_array_equal(getattr(compiled, field), getattr(numpy_path, field))
