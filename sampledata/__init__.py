"""Sample data for the benchmark and the demo: real photo locations with simulated visual features.

No pixels and no pretrained weights exist offline, so the local benchmark pairs the *real* locations
bundled in ``data/`` (see ``data/SOURCES.md``) with *simulated* image features:

- training photos at MP-16 locations (``mp16_coordinates_100k.csv``; a jitter of tens of metres keeps
  photos that share a coordinate from being exact duplicates; drawn with replacement above 100k photos),
- test photos at the real Im2GPS3k and YFCC4k coordinates (the seed paper's Tables 2 and 3).

A second, real-signal sample (``--scene``) uses the YFCC25600 Places365 scene labels as features.

Run locally::

    python -m sampledata --out out/sample --n_train 100000 --seed 0 --dim 128
    python -m sampledata --out out/scene --seed 0 --scene

The output folder holds ``train.parquet`` and ``test_im2gps3k.parquet`` / ``test_yfcc4k.parquet`` (or
``test.parquet`` for ``--scene``), each with the ``schemas.FEATURES`` schema (photo_id, lat, lng,
embedding = list<float32>), plus ``sample.json`` (every knob, for provenance) and ``feature_model.png``
(what the simulated features look like). This is a local NumPy job, not a Beam pipeline: the files it
writes are the inputs of the Beam jobs, which run locally or on Dataflow. Modules: ``paths`` (bundled
files), ``datasets`` (their loaders), ``field`` (``FeatureModel``, ``LocationField``), ``photos``
(simulated embeddings), ``writer`` (the samples), ``plots`` (feature_model.png), ``__main__`` (the CLI).
No Beam and no TensorFlow here.

The feature model
=================
All settings below are fields of one object, :class:`sampledata.FeatureModel`.
An embedding is a fixed function of the photo's location and the seed (the *location signal*), plus
per-photo noise drawn from the seed and the photo's position in its set::

    outdoor photo:  e = sqrt(rho * dim) * s(x) + sqrt(1 - rho) * z        z ~ N(0, I_dim)
    indoor photo:   e = z
    s(x) = normalise( sum_k  w_k * f_k(x) )                                 (unit vector)
    f_k(x) = sum_v  K_k(x, v) * code(v)  /  sqrt(sum_v K_k(x, v)^2)         (about unit length)

Every entry of ``e`` has variance 1 for indoor and outdoor photos alike, so the norm tells nothing.

Scales ``k``. Each scale has anchors: the vertices of a randomly rotated and shifted cubic lattice of
spacing ``L_k`` in Earth-centred 3-D space (km). A point's anchors are the 8 vertices of its lattice
cell and ``K_k`` is the smoothstep-trilinear interpolation weight, a kernel of distance with support of
one lattice spacing: the classic value-noise construction restricted to the sphere. It gives a smooth
field whose correlation falls to zero at about ``L_k``, needs no global list of anchors (a 1 km lattice of
the whole earth would have ~5e8 of them) and costs 8 look-ups per photo and scale, so a million photos
take seconds. Anchor codes are rows of a seeded codebook of random unit vectors picked by a hash of the
anchor; the codebook has ``codebook_size`` rows (default: as many as fit in 64 MiB, at most 2^17), so two
unrelated anchors share a code with probability ~1e-5.

Look-alikes. On the fine scales (city, street) a share ``lookalike_fraction`` of anchors takes the code
of another anchor at least ``lookalike_min_km`` away: the lattice vertex nearest a location drawn from
``lookalike_targets`` (default: the MP-16 coordinates, so twins sit where photos are, as the Paris street
that looks like a Montreal street does; a twin is never itself a look-alike, so the two share exactly).

Defaults, chosen from first principles before any model was trained, and not to be changed to make a
method win (the benchmark reports whatever comes out):

- Scales continent 2000 km, region 500 km, city 25 km, street/landmark 1 km: the issue's four scales,
  spanning the paper's evaluation radii (1 km ... 2500 km).
- Equal weights ``w_k = 1``: nothing says which scale dominates the appearance of a photo, so each gets
  the same share of the location signal.
- ``location_signal_share rho = 0.5``: the share of an outdoor photo's feature variance explained by where
  it was taken. Unknown; one half is the maximum-ignorance choice (two outdoor photos at one spot have
  cosine similarity ~0.5; photos of unrelated places ~0).
- ``indoor_share = 0.3``: indoor photos carry no location signal. The Places365 scene labels bundled
  here put the indoor share at 36% of YFCC25600 (random Flickr, like MP-16) and 18% of Im2GPS3k
  (curated); 0.3 is a round figure in between. For Im2GPS3k the real per-photo label is used instead
  (``S3_Label == 0`` is indoor); YFCC4k has no labels and gets the default share.
- ``lookalike_fraction = 0.1`` with ``lookalike_min_km = 2500`` (the paper's continent radius): a modest
  guess at how often a street or a city district has a far-away twin.
- Training-location jitter: N(0, 30 m) east and north.
"""

from sampledata.datasets import TEST_SETS, TestSet, load_test_set, mp16_locations, scene_features
from sampledata.field import DEFAULT_SCALES, FeatureModel, LocationField, Scale
from sampledata.photos import SimulatedPhotos, jitter_locations, simulate_photos, simulate_photos_detailed
from sampledata.writer import features_table, is_held_out, make_sample, make_scene_sample

__all__ = [
    "DEFAULT_SCALES",
    "FeatureModel",
    "LocationField",
    "Scale",
    "SimulatedPhotos",
    "TEST_SETS",
    "TestSet",
    "features_table",
    "is_held_out",
    "jitter_locations",
    "load_test_set",
    "make_sample",
    "make_scene_sample",
    "mp16_locations",
    "scene_features",
    "simulate_photos",
    "simulate_photos_detailed",
]
