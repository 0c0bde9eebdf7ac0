"""The paper's Figure 4 for one photo: the top-scoring region as geoclass sets are added one by one.

Panel j combines the first j sets with NormalizedSum: the nodes of the arg-max partition(s) are drawn in red,
their Eq. 4 centre (the prediction) as a gold star and the true location as a green cross, with the error in
km in the panel title, over coastlines and borders (:mod:`partition_gen.maps`). Each panel zooms to its own
top region, so the view narrows as sets are added, as in the paper; the truth is shown when it is near the
region, otherwise an arrow at the panel's edge points to it with its distance. A small world map under each
panel shows where the panel is. The file is named after the photo (:func:`figure_file_name`).
"""

from __future__ import annotations

import re
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


# A panel also shows the truth when that widens the view to at most this many times the region's view.
_TRUTH_ZOOM_OUT = 4.0


def figure_file_name(photo_id: str, prefix: str = "figure4_") -> str:
    """``figure4_<photo id>.png`` with the id made safe for file systems: an image extension dropped,
    anything but letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``."""
    stem = re.sub(r"\.(jpe?g|png|gif|bmp|tiff?|webp|heic|heif)$", "", str(photo_id), flags=re.IGNORECASE)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "photo"
    return f"{prefix}{safe[:150]}.png"


def _span(extent) -> float:
    return max(extent[1] - extent[0], extent[3] - extent[2])


def panel_extent(region_lat, region_lng, pred: tuple[float, float], truth: tuple[float, float]):
    """(extent, truth shown): the view of the region and the prediction, widened to the truth when near."""
    from partition_gen.maps import fit_extent

    lat = np.append(region_lat, pred[0])
    lng = np.append(region_lng, pred[1])
    # At least ~15 km across: finer than that the bundled coastlines show nothing useful.
    own = fit_extent(lat, lng, pad_fraction=0.25, min_span=0.15, aspect=1.1)
    with_truth = fit_extent(np.append(lat, truth[0]), np.append(lng, truth[1]), pad_fraction=0.15, min_span=0.15,
                            aspect=1.1)
    if _span(with_truth) <= _TRUTH_ZOOM_OUT * _span(own):
        return with_truth, True
    return own, False


def _edge_pointer(ax, extent, lat: float, lng: float, text: str, colour: str) -> None:
    """An arrow from inside the panel edge towards (lat, lng), which lies outside ``extent``."""
    lng0, lng1, lat0, lat1 = extent
    cx, cy = (lng0 + lng1) / 2, (lat0 + lat1) / 2
    # Direction in panel fractions, so the arrow meets the edge the point lies beyond.
    dx, dy = (lng - cx) / (lng1 - lng0), (lat - cy) / (lat1 - lat0)
    scale = 0.42 / max(abs(dx), abs(dy), 1e-9)
    head = (0.5 + dx * scale, 0.5 + dy * scale)
    tail = (0.5 + dx * scale * 0.62, 0.5 + dy * scale * 0.62)
    ax.annotate(
        text, xy=head, xytext=tail, xycoords="axes fraction", textcoords="axes fraction", fontsize=7,
        ha="center", va="center", color="k", zorder=10,
        arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.6},
        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": colour, "alpha": 0.9},
    )


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
    from partition_gen import maps
    from partition_gen.geo import haversine_km
    from partition_gen.naming import display_name as display_set_name

    plt = maps._pyplot()
    steps = progressive_steps(partitions, probabilities, true_lat, true_lng, set_order)
    node_lat = partitions.node_lat.astype(np.float64)
    node_lng = partitions.node_lng.astype(np.float64)
    background = np.arange(node_lat.size)
    if background.size > _MAX_BACKGROUND_NODES:
        background = np.random.default_rng(0).choice(background, _MAX_BACKGROUND_NODES, replace=False)
    columns = min(3, len(steps))
    rows = int(np.ceil(len(steps) / columns))
    fig = plt.figure(figsize=(4.7 * columns, 5.3 * rows + 0.7), dpi=100)
    outer = fig.add_gridspec(rows, columns, hspace=0.3, wspace=0.22)
    panels = []
    for k, step in enumerate(steps):
        cell = outer[k // columns, k % columns].subgridspec(2, 1, height_ratios=[4.2, 1.3], hspace=0.14)
        ax, locator = fig.add_subplot(cell[0]), fig.add_subplot(cell[1])
        extent, truth_shown = panel_extent(node_lat[step.nodes], node_lng[step.nodes], (step.lat, step.lng),
                                           (true_lat, true_lng))
        lng0, lng1, lat0, lat1 = extent
        maps.base_map(ax, extent)
        near = background[(node_lng[background] >= lng0) & (node_lng[background] <= lng1)
                          & (node_lat[background] >= lat0) & (node_lat[background] <= lat1)]
        ax.scatter(node_lng[near], node_lat[near], s=2, c="0.55", linewidths=0, zorder=2.5, label="other nodes")
        size = float(np.clip(400.0 / max(step.nodes.size, 1), 3, 30))
        ax.scatter(node_lng[step.nodes], node_lat[step.nodes], s=size, c="tab:red", linewidths=0, zorder=5,
                   label="top region")
        ax.plot(step.lng, step.lat, marker="*", ms=15, mfc="gold", mec="k", mew=0.8, ls="", zorder=7,
                label="prediction (Eq. 4)")
        if truth_shown:
            ax.plot(true_lng, true_lat, marker="X", ms=11, mfc="tab:green", mec="k", mew=0.8, ls="", zorder=8,
                    label="true location")
        else:
            _edge_pointer(ax, extent, true_lat, true_lng, f"true location\n{step.error_km:,.0f} km", "tab:green")
        added = display_set_name(step.set_names[-1])
        count = f"{len(step.set_names)} set" + ("s" if len(step.set_names) > 1 else "")
        region_km = _region_radius_km(node_lat[step.nodes], node_lng[step.nodes], step.lat, step.lng, haversine_km)
        ax.set_title(f"({k + 1}) + {added}: {count}\nerror {step.error_km:,.1f} km; region {step.nodes.size:,} "
                     f"nodes, radius {region_km:,.0f} km", fontsize=9)
        # The locator: the panel's place in a view of at least 40 degrees that also holds the truth.
        around = maps.fit_extent([lat0, lat1, true_lat], [lng0, lng1, true_lng], pad_fraction=0.1, min_span=40.0,
                                 aspect=1.9)
        maps.base_map(locator, around, ticks=False, states=False)
        locator.add_patch(maps._box(extent, "tab:red"))
        locator.plot((lng0 + lng1) / 2, (lat0 + lat1) / 2, marker="s", ms=3, mfc="none", mec="tab:red", ls="",
                     zorder=7)
        locator.plot(true_lng, true_lat, marker="X", ms=6, mfc="tab:green", mec="k", mew=0.4, ls="", zorder=8)
        panels += [(f"panel{k + 1}", ax), (f"locator{k + 1}", locator)]
    handles, labels = panels[0][1].get_legend_handles_labels()
    # The first panel may not show the truth: the legend always lists all four marks.
    if "true location" not in labels:
        handles.append(plt.Line2D([], [], marker="X", ms=11, mfc="tab:green", mec="k", ls=""))
        labels.append("true location")
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False, markerscale=1.0)
    name = f"Photo {photo_id}: " if photo_id else ""
    fig.suptitle(f"{name}top region as geoclass sets are added (NormalizedSum); final error "
                 f"{steps[-1].error_km:,.1f} km", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.9 / fig.get_figheight(), bottom=0.6 / fig.get_figheight())
    maps.save_map(fig, path, panels)
    plt.close(fig)
    return steps


def _region_radius_km(lat, lng, centre_lat, centre_lng, haversine_km) -> float:
    """Distance from the prediction to the farthest node of the region."""
    if len(lat) == 0:
        return 0.0
    return float(np.max(haversine_km(lat, lng, centre_lat, centre_lng)))
