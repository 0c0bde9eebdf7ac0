"""The feature model's settings and the location field: real locations onto simulated visual features.

The model is documented in :mod:`sampledata` (the package docstring). :class:`FeatureModel` is its one
settings object; :class:`LocationField` evaluates the location signal for a seed and a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field

import numpy as np

from partition_gen.geo import EARTH_RADIUS_KM, latlng_to_xyz
from sampledata.datasets import mp16_locations


@dataclass(frozen=True)
class Scale:
    """One scale of the location signal: lattice spacing (km), weight, and whether it has look-alikes."""

    name: str
    length_km: float
    weight: float = 1.0
    lookalikes: bool = False


DEFAULT_SCALES: tuple[Scale, ...] = (
    Scale("continent", 2000.0),
    Scale("region", 500.0),
    Scale("city", 25.0, lookalikes=True),
    Scale("street", 1.0, lookalikes=True),
)
DEFAULT_DIM = 128
DEFAULT_SIGNAL_SHARE = 0.5
DEFAULT_INDOOR_SHARE = 0.3
DEFAULT_LOOKALIKE_FRACTION = 0.1
DEFAULT_LOOKALIKE_MIN_KM = 2500.0


@dataclass(frozen=True)
class FeatureModel:
    """Every setting of the simulated-feature model (defaults and their reasons: see :mod:`sampledata`).

    ``lookalike_targets`` (lat, lng arrays) defaults to the bundled MP-16 coordinates; ``codebook_size``
    to :func:`default_codebook_size` of ``dim``.
    """

    dim: int = DEFAULT_DIM
    scales: tuple[Scale, ...] = DEFAULT_SCALES
    signal_share: float = DEFAULT_SIGNAL_SHARE
    indoor_share: float = DEFAULT_INDOOR_SHARE
    lookalike_fraction: float = DEFAULT_LOOKALIKE_FRACTION
    lookalike_min_km: float = DEFAULT_LOOKALIKE_MIN_KM
    lookalike_targets: tuple[np.ndarray, np.ndarray] | None = dataclass_field(default=None, compare=False)
    codebook_size: int | None = None

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if not self.scales:
            raise ValueError("at least one scale is needed")
        for scale in self.scales:
            # 21-bit lattice coordinates cover the earth down to ~11 m spacing.
            if not scale.length_km >= 0.02:
                raise ValueError(f"scale {scale.name}: length_km must be >= 0.02, got {scale.length_km}")
            if scale.weight < 0:
                raise ValueError(f"scale {scale.name}: weight must be >= 0, got {scale.weight}")
        for name in ("signal_share", "indoor_share", "lookalike_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        object.__setattr__(self, "scales", tuple(self.scales))

    def describe(self) -> dict:
        """The settings as plain JSON values (for sample.json), with the codebook size resolved."""
        return {
            "scales": [asdict(s) for s in self.scales],
            "signal_share": self.signal_share,
            "indoor_share": self.indoor_share,
            "lookalike_fraction": float(self.lookalike_fraction),
            "lookalike_min_km": float(self.lookalike_min_km),
            "codebook_size": int(self.codebook_size or default_codebook_size(self.dim)),
        }


# Noise is drawn per block of this many photos, so a photo's noise never depends on how callers chunk work.
BLOCK = 8192
_MAX_CODEBOOK_ROWS = 1 << 17
_CODEBOOK_BYTES = 1 << 26
# Look-alike twins are retried this many times when the drawn target is too close or itself a look-alike.
_LOOKALIKE_TRIES = 4
# Seed-sequence streams, so the codebook, lattices, hashes and per-photo draws never share random numbers.
_STREAM_CODEBOOK, _STREAM_LATTICE, _STREAM_HASH, STREAM_PHOTOS = 1, 2, 3, 100
# Lattice coordinates are packed into 21 bits each (offset by 2^20) to make one 64-bit anchor key.
_COORD_BITS = 21
_COORD_OFFSET = 1 << (_COORD_BITS - 1)
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# Hashing: counter-based, so every anchor's code and look-alike draw is a pure function of (seed, anchor).


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over uint64 arrays (wrap-around arithmetic is intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit_interval(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _pack(vertices: np.ndarray) -> np.ndarray:
    shifted = (vertices + _COORD_OFFSET).astype(np.uint64)
    return (
        (shifted[..., 0] << np.uint64(2 * _COORD_BITS))
        | (shifted[..., 1] << np.uint64(_COORD_BITS))
        | shifted[..., 2]
    )


def _unpack(keys: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << _COORD_BITS) - 1)
    parts = [
        (keys >> np.uint64(2 * _COORD_BITS)) & mask,
        (keys >> np.uint64(_COORD_BITS)) & mask,
        keys & mask,
    ]
    return np.stack(parts, axis=-1).astype(np.int64) - _COORD_OFFSET


def default_codebook_size(dim: int) -> int:
    """As many codebook rows as fit in 64 MiB of float32, a power of two in [4096, 2^17]."""
    rows = 1 << int(math.floor(math.log2(max(1, _CODEBOOK_BYTES // (4 * dim)))))
    return int(min(_MAX_CODEBOOK_ROWS, max(4096, rows)))


# ---------------------------------------------------------------------------------------------------------
# The location signal.


class LocationField:
    """The location signal: a fixed function of (location, seed) onto unit vectors of ``dim`` entries.

    Built once per (seed, :class:`FeatureModel`); ``signal`` and ``scale_field`` evaluate it.
    """

    def __init__(self, seed: int, model: FeatureModel | None = None):
        model = model or FeatureModel()
        self.model = model
        self.seed, self.dim, self.scales = int(seed), int(model.dim), tuple(model.scales)
        self.lookalike_fraction = float(model.lookalike_fraction)
        self.lookalike_min_km = float(model.lookalike_min_km)
        self.codebook_size = int(model.codebook_size or default_codebook_size(model.dim))

        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _STREAM_CODEBOOK])))
        codebook = rng.standard_normal((self.codebook_size, self.dim), dtype=np.float32)
        self.codebook = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)

        self.rotations, self.offsets, self.salts = [], [], []
        for k in range(len(self.scales)):
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence([self.seed, _STREAM_LATTICE, k]))
            )
            q, r = np.linalg.qr(rng.standard_normal((3, 3)))
            self.rotations.append(q * np.sign(np.diag(r)))
            self.offsets.append(rng.random(3))
            state = np.random.SeedSequence([self.seed, _STREAM_HASH, k]).generate_state(
                2 + _LOOKALIKE_TRIES, np.uint64
            )
            self.salts.append(state)

        lookalike_targets = model.lookalike_targets
        needs_targets = self.lookalike_fraction > 0 and any(s.lookalikes for s in self.scales)
        if needs_targets and lookalike_targets is None:
            lookalike_targets = mp16_locations()
        if needs_targets:
            t_lat, t_lng = (np.asarray(a, dtype=np.float64) for a in lookalike_targets)
            if t_lat.size == 0:
                raise ValueError("lookalike_targets is empty")
            self.target_xyz_km = latlng_to_xyz(t_lat, t_lng) * EARTH_RADIUS_KM
        else:
            self.target_xyz_km = np.zeros((0, 3))

    # -- lattice -----------------------------------------------------------------------------------------
    def _lattice_coords(self, k: int, xyz_km: np.ndarray) -> np.ndarray:
        return xyz_km @ self.rotations[k].T / self.scales[k].length_km + self.offsets[k]

    def vertex_xyz_km(self, k: int, vertices: np.ndarray) -> np.ndarray:
        """Earth-centred positions (km) of lattice vertices (integer coordinates, shape (..., 3))."""
        return ((vertices - self.offsets[k]) * self.scales[k].length_km) @ self.rotations[k]

    def nearest_vertex(self, k: int, xyz_km: np.ndarray) -> np.ndarray:
        return np.floor(self._lattice_coords(k, xyz_km) + 0.5).astype(np.int64)

    def anchors(self, k: int, xyz_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The 8 anchor vertices (n, 8, 3) of each point and their kernel weights (n, 8)."""
        q = self._lattice_coords(k, xyz_km)
        base = np.floor(q)
        t = q - base
        smooth = t * t * (3.0 - 2.0 * t)
        vertices = base.astype(np.int64)[:, None, :] + _CORNERS[None]
        weights = np.where(_CORNERS[None].astype(bool), smooth[:, None, :], 1.0 - smooth[:, None, :]).prod(
            axis=2
        )
        return vertices, weights

    # -- codes -------------------------------------------------------------------------------------------
    def _is_lookalike(self, k: int, keys: np.ndarray) -> np.ndarray:
        if not self.scales[k].lookalikes or self.lookalike_fraction <= 0:
            return np.zeros(keys.shape, dtype=bool)
        return _unit_interval(_mix64(keys ^ self.salts[k][0])) < self.lookalike_fraction

    def _own_rows(self, k: int, keys: np.ndarray) -> np.ndarray:
        return (_mix64(keys ^ self.salts[k][1]) % np.uint64(self.codebook_size)).astype(np.int64)

    def twins(self, k: int, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For vertices (m, 3): whether each is a look-alike, and its twin vertex (itself if not)."""
        vertices = np.asarray(vertices, dtype=np.int64).reshape(-1, 3)
        keys = _pack(vertices)
        lookalike = self._is_lookalike(k, keys)
        twin = vertices.copy()
        pending = np.flatnonzero(lookalike)
        if pending.size:
            here = self.vertex_xyz_km(k, vertices[pending])
            here /= np.linalg.norm(here, axis=1, keepdims=True)
            for attempt in range(_LOOKALIKE_TRIES):
                draw = _mix64(keys[pending] ^ self.salts[k][2 + attempt])
                target = self.target_xyz_km[(draw % np.uint64(len(self.target_xyz_km))).astype(np.int64)]
                candidate = self.nearest_vertex(k, target)
                there = self.vertex_xyz_km(k, candidate)
                there /= np.linalg.norm(there, axis=1, keepdims=True)
                far_km = EARTH_RADIUS_KM * np.arccos(np.clip((here * there).sum(axis=1), -1.0, 1.0))
                ok = (far_km >= self.lookalike_min_km) & ~self._is_lookalike(k, _pack(candidate))
                twin[pending[ok]] = candidate[ok]
                pending, here = pending[~ok], here[~ok]
                if not pending.size:
                    break
            # A vertex whose draws all failed keeps its own code: it is not a look-alike after all.
            lookalike[pending] = False
        return lookalike, twin

    def code_rows(self, k: int, vertices: np.ndarray) -> np.ndarray:
        """Codebook row of each vertex (m, 3) after look-alike substitution."""
        _, twin = self.twins(k, vertices)
        return self._own_rows(k, _pack(twin))

    # -- fields ------------------------------------------------------------------------------------------
    def scale_field(self, k: int, xyz_km: np.ndarray) -> np.ndarray:
        """Scale k's field at points (n, 3) in km: float32 (n, dim), about unit length."""
        vertices, weights = self.anchors(k, xyz_km)
        keys = _pack(vertices).ravel()
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        rows = self.code_rows(k, _unpack(unique_keys))[inverse].reshape(weights.shape)
        weights = (weights / np.sqrt((weights**2).sum(axis=1, keepdims=True))).astype(np.float32)
        return np.einsum("nk,nkd->nd", weights, self.codebook[rows])

    def signal(self, lat, lng, progress: bool = False) -> np.ndarray:
        """Unit location-signal vectors, float32 (n, dim), for latitudes and longitudes in degrees."""
        xyz_km = latlng_to_xyz(np.ravel(lat), np.ravel(lng)) * EARTH_RADIUS_KM
        out = np.empty((len(xyz_km), self.dim), dtype=np.float32)
        starts = range(0, len(xyz_km), BLOCK)
        for start in _progress(starts, progress, "location signal"):
            block = xyz_km[start : start + BLOCK]
            total = np.zeros((len(block), self.dim), dtype=np.float32)
            for k, scale in enumerate(self.scales):
                if scale.weight:
                    total += np.float32(scale.weight) * self.scale_field(k, block)
            norm = np.linalg.norm(total, axis=1, keepdims=True)
            out[start : start + len(block)] = total / np.maximum(norm, np.float32(1e-12))
        return out


def _progress(iterable, enabled: bool, label: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=label, unit="block")
