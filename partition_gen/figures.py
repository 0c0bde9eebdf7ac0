"""The paper's Figure 4 for one photo: the top-scoring region as geoclass sets are added one by one.

Panel j combines the first j sets with NormalizedSum: the nodes of the arg-max partition(s) are drawn in colour,
their Eq. 4 centre as a star and the true location as a cross, with the error in km in the panel title.
Plate carrée (x = longitude, y = latitude), zoomed on the first panel's region and the truth so that the
shrinking of the region is visible; an inset shows the whole world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from partition_gen.combine import NORMALIZED_SUM, SIMPLE_SUM, Combiner
from partition_gen.geo import haversine_km
from partition_gen.partitions import Partitions

_MAX_BACKGROUND_NODES = 60_000


@dataclass(frozen=True)
class Step:
    set_names: tuple[str, ...]
    lat: float
    lng: float
    error_km: float
    nodes: np.ndarray


def progressive_steps(
    partitions: Partitions,
    probabilities: Mapping[str, np.ndarray],
    true_lat: float,
    true_lng: float,
    set_order: Sequence[str] | None = None,
) -> list[Step]:
    """One step per prefix of ``set_order``: the arg-max region's nodes, its centre and the error."""
    order = tuple(set_order) if set_order is not None else partitions.set_names
    steps = []
    for j in range(1, len(order) + 1):
        names = order[:j]
        restricted = partitions.restrict(names)
        rule = NORMALIZED_SUM if j > 1 else SIMPLE_SUM
        probs = {n: np.asarray(probabilities[n]).reshape(1, -1) for n in names}
        pred = Combiner(restricted, rule=rule, top_k=1).predict(probs)
        nodes = np.flatnonzero(np.isin(restricted.node_partition, pred.argmax_partitions[0]))
        lat, lng = float(pred.lat[0]), float(pred.lng[0])
        steps.append(Step(names, lat, lng, float(haversine_km(lat, lng, true_lat, true_lng)), nodes))
    return steps


def _extent(lats: np.ndarray, lngs: np.ndarray, pad_fraction: float = 0.25, min_span: float = 2.0):
    lat_lo, lat_hi = float(lats.min()), float(lats.max())
    lng_lo, lng_hi = float(lngs.min()), float(lngs.max())
    span = max(lat_hi - lat_lo, lng_hi - lng_lo, min_span)
    pad = span * pad_fraction
    lat_c, lng_c = (lat_lo + lat_hi) / 2, (lng_lo + lng_hi) / 2
    half = span / 2 + pad
    return (max(lng_c - half, -180), min(lng_c + half, 180), max(lat_c - half, -90), min(lat_c + half, 90))


def plot_progressive_map(
    partitions: Partitions,
    probabilities: Mapping[str, np.ndarray],
    true_lat: float,
    true_lng: float,
    path: str,
    set_order: Sequence[str] | None = None,
    photo_id: str = "",
) -> list[Step]:
    """Write the Figure-4 PNG to ``path`` and return the steps it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from partition_gen.evaluation import display_set_name

    steps = progressive_steps(partitions, probabilities, true_lat, true_lng, set_order)
    node_lat = partitions.node_lat.astype(np.float64)
    node_lng = partitions.node_lng.astype(np.float64)
    rng = np.random.default_rng(0)
    background = np.arange(node_lat.size)
    if background.size > _MAX_BACKGROUND_NODES:
        background = rng.choice(background, _MAX_BACKGROUND_NODES, replace=False)
    first = steps[0].nodes
    lng0, lng1, lat0, lat1 = _extent(
        np.concatenate([node_lat[first], [true_lat]]), np.concatenate([node_lng[first], [true_lng]])
    )
    columns = min(3, len(steps))
    rows = int(np.ceil(len(steps) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(steps) :]:
        ax.axis("off")
    for ax, step in zip(axes.ravel(), steps):
        inside = (node_lng[background] >= lng0) & (node_lng[background] <= lng1)
        inside &= (node_lat[background] >= lat0) & (node_lat[background] <= lat1)
        ax.scatter(node_lng[background][inside], node_lat[background][inside], s=1, c="0.8", linewidths=0)
        ax.scatter(node_lng[step.nodes], node_lat[step.nodes], s=12, c="tab:red", linewidths=0, label="top region")
        ax.plot(step.lng, step.lat, marker="*", ms=12, mfc="gold", mec="k", alpha=0.85, ls="", label="prediction (Eq. 4)")
        ax.plot(true_lng, true_lat, marker="X", ms=9, mfc="tab:green", mec="k", alpha=0.85, ls="", label="true location")
        ax.set_xlim(lng0, lng1)
        ax.set_ylim(lat0, lat1)
        ax.set_aspect("equal")
        added = display_set_name(step.set_names[-1])
        count = f"{len(step.set_names)} set" + ("s" if len(step.set_names) > 1 else "")
        ax.set_title(f"+ {added} ({count})\nerror {step.error_km:,.1f} km, {step.nodes.size} nodes",
                     fontsize=9)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        world = ax.inset_axes([0.0, 0.0, 0.3, 0.15])
        world.set_xlim(-180, 180)
        world.set_ylim(-90, 90)
        world.scatter(node_lng[background], node_lat[background], s=0.1, c="0.7", linewidths=0)
        world.add_patch(plt.Rectangle((lng0, lat0), lng1 - lng0, lat1 - lat0, fill=False, ec="tab:red"))
        world.set_xticks([])
        world.set_yticks([])
    axes.ravel()[0].legend(loc="upper right", fontsize=7)
    name = f"photo {photo_id}: " if photo_id else ""
    fig.suptitle(f"{name}sets added one by one (NormalizedSum); final error {steps[-1].error_km:,.1f} km")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return steps
