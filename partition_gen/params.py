"""Parameters of geoclass sets (paper Table 1; DESIGN.md, "Geoclass-set parameters").

- ``set1``: visual, α = (1, 0, 0), β = (1, 0), all feature dimensions.
- ``set2``: geographic, α = (1, 0, 0), β = (0, 1).
- ``set3``, ``set4``, ...: sampled from a seed: a class count uniform in a configured range, α uniform on
  the simplex (Dirichlet(1, 1, 1)), β1 uniform in [0, 1] with β2 = 1 − β1, and a random axis-aligned
  feature subspace whose size is a uniform fraction (default 0.5-0.75, like Table 1's 1,113-1,498 of 2,048)
  of the embedding dimension. Set i draws from its own stream ``default_rng([seed, i])``, so asking for
  more sets never changes the earlier ones.
- ``planet``: PlaNet's adaptive S2 partitioning with thresholds ``t_min`` and ``t_max``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from partition_gen.naming import PLANET

MERGE = "merge"
KINDS = (MERGE, PLANET)


@dataclass(frozen=True)
class GeoclassSetSpec:
    """One geoclass set to generate. ``feature_dims=None`` means every feature dimension."""

    name: str
    kind: str = MERGE
    n_classes: int | None = None
    alpha: tuple[float, float, float] = (1.0, 0.0, 0.0)
    beta: tuple[float, float] = (1.0, 0.0)
    feature_dims: tuple[int, ...] | None = field(default=None, repr=False)
    t_min: int | None = None
    t_max: int | None = None

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(f"geoclass set '{self.name}': {problem}")

    def problem(self) -> str | None:
        if not self.name or not self.name.replace("_", "").isalnum():
            return f"name {self.name!r} must be a non-empty identifier"
        if self.kind not in KINDS:
            return f"kind {self.kind!r} is not one of {KINDS}"
        if self.kind == PLANET:
            if (
                self.t_min is None
                or self.t_max is None
                or not 0 <= self.t_min <= self.t_max
                or self.t_max < 1
            ):
                return f"planet sets need 0 <= t_min <= t_max and t_max >= 1, got t_min={self.t_min} t_max={self.t_max}"
            return None
        if self.n_classes is None or int(self.n_classes) < 1:
            return f"n_classes must be a positive integer, got {self.n_classes}"
        for label, values, size in (("alpha", self.alpha, 3), ("beta", self.beta, 2)):
            if len(values) != size or any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
                return f"{label} must be {size} non-negative numbers with a positive sum, got {tuple(values)}"
        if self.feature_dims is not None:
            dims = list(self.feature_dims)
            if not dims or min(dims) < 0 or len(set(dims)) != len(dims):
                return "feature_dims must be a non-empty list of distinct non-negative indices"
        return None

    def check_against(self, n_nodes: int, embedding_dim: int) -> None:
        """Refuse a spec that cannot be built on this graph, naming both sides."""
        if self.kind != MERGE:
            return
        if self.n_classes > n_nodes:
            raise ValueError(
                f"geoclass set '{self.name}' asks for {self.n_classes} classes but the graph has {n_nodes} nodes"
            )
        if self.beta[0] > 0:
            if embedding_dim == 0:
                raise ValueError(
                    f"geoclass set '{self.name}' has beta1 > 0 but the cells table holds no features"
                )
            if self.feature_dims is not None and max(self.feature_dims) >= embedding_dim:
                raise ValueError(
                    f"geoclass set '{self.name}' uses feature dimension {max(self.feature_dims)}"
                    f" but the features have {embedding_dim} dimensions"
                )

    def params(self) -> dict:
        """The JSON ``params`` of sets.json (n_classes of a merge set is stored beside them)."""
        if self.kind == PLANET:
            return {"t_min": int(self.t_min), "t_max": int(self.t_max)}
        return {
            "alpha": [float(a) for a in self.alpha],
            "beta": [float(b) for b in self.beta],
            "feature_dims": None if self.feature_dims is None else [int(d) for d in self.feature_dims],
        }

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_classes": self.n_classes, "params": self.params()}

    @classmethod
    def from_json(cls, record: Mapping) -> GeoclassSetSpec:
        kind = record.get("kind", MERGE)
        p = record.get("params", {})
        if kind == PLANET:
            return cls(name=record["name"], kind=PLANET, t_min=int(p["t_min"]), t_max=int(p["t_max"]))
        dims = p.get("feature_dims")
        return cls(
            name=record["name"],
            kind=MERGE,
            n_classes=int(record["n_classes"]),
            alpha=tuple(float(a) for a in p.get("alpha", (1.0, 0.0, 0.0))),
            beta=tuple(float(b) for b in p.get("beta", (1.0, 0.0))),
            feature_dims=None if dims is None else tuple(int(d) for d in dims),
        )

    def describe(self) -> str:
        """A one-line summary for map titles and logs."""
        if self.kind == PLANET:
            return f"{self.name}: PlaNet adaptive S2, t_min={self.t_min}, t_max={self.t_max}"
        dims = "all" if self.feature_dims is None else str(len(self.feature_dims))
        a = ", ".join(f"{x:.3f}" for x in self.alpha)
        b = ", ".join(f"{x:.3f}" for x in self.beta)
        return f"{self.name}: K={self.n_classes:,}, α=({a}), β=({b}), dims={dims}"


def fixed_specs(n_classes: int) -> list[GeoclassSetSpec]:
    """Sets 1 (visual) and 2 (geographic) of Table 1."""
    return [
        GeoclassSetSpec("set1", MERGE, n_classes, (1.0, 0.0, 0.0), (1.0, 0.0)),
        GeoclassSetSpec("set2", MERGE, n_classes, (1.0, 0.0, 0.0), (0.0, 1.0)),
    ]


def sample_spec(
    index: int,
    seed: int,
    embedding_dim: int,
    class_range: tuple[int, int],
    dim_fraction: tuple[float, float] = (0.5, 0.75),
) -> GeoclassSetSpec:
    """The sampled spec of set number ``index`` (3, 4, ...), from its own seeded stream."""
    lo, hi = int(class_range[0]), int(class_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"class_range must satisfy 1 <= low <= high, got {class_range}")
    if embedding_dim < 1:
        raise ValueError("sampled sets need features: embedding_dim must be >= 1")
    rng = np.random.default_rng([int(seed), int(index)])
    n_classes = int(rng.integers(lo, hi + 1))
    alpha = tuple(float(a) for a in rng.dirichlet((1.0, 1.0, 1.0)))
    beta1 = float(rng.uniform(0.0, 1.0))
    f_lo, f_hi = dim_fraction
    size = int(np.clip(round(rng.uniform(f_lo, f_hi) * embedding_dim), 1, embedding_dim))
    dims = tuple(int(d) for d in np.sort(rng.choice(embedding_dim, size=size, replace=False)))
    return GeoclassSetSpec(f"set{index}", MERGE, n_classes, alpha, (beta1, 1.0 - beta1), dims)


def default_specs(
    n_classes: int,
    n_sampled: int = 3,
    seed: int = 0,
    embedding_dim: int = 2048,
    class_range: tuple[int, int] | None = None,
    planet: tuple[int, int] | None = None,
) -> list[GeoclassSetSpec]:
    """Sets 1 and 2, ``n_sampled`` seeded sets (class count in ``class_range``, default ±30 % above
    ``n_classes`` like Table 1) and optionally a PlaNet set with (t_min, t_max)."""
    if class_range is None:
        class_range = (n_classes, max(n_classes, round(n_classes * 1.3)))
    specs = fixed_specs(n_classes)
    specs += [sample_spec(3 + i, seed, embedding_dim, class_range) for i in range(n_sampled)]
    if planet is not None:
        specs.append(GeoclassSetSpec(PLANET, PLANET, t_min=int(planet[0]), t_max=int(planet[1])))
    return specs


def check_unique_names(specs: Sequence[GeoclassSetSpec]) -> None:
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"geoclass set names must be unique; repeated: {', '.join(dupes)}")
    if not specs:
        raise ValueError("no geoclass sets to generate")
