"""A PNG per geoclass set: nodes coloured by class on a plate carrée world map (like the paper's Figure 2).

Each pixel takes the colour of the class of its nearest node (the node's territory, so the map covers the
whole earth as the graph does), drawn pale; the nodes themselves are drawn on top in full colour.

Colours come from a seeded shuffle of a qualitative palette by class id, so neighbouring classes (which have
nearby ids far less often than a sequential colormap would suggest) stand apart. No coastline data is
bundled; the node density itself draws the continents.
"""

from __future__ import annotations

import os

import numpy as np

from partition_gen.geo import latlng_to_xyz, xyz_to_latlng
from partition_gen.params import GeoclassSetSpec

MAX_DRAWN_NODES = 300_000


def class_colours(n_classes: int, seed: int = 0) -> np.ndarray:
    """RGBA per class: a 20-colour palette with per-class jitter, shuffled by a fixed seed."""
    import matplotlib

    base = np.asarray(matplotlib.colormaps["tab20"].colors)
    rng = np.random.default_rng(seed)
    pick = base[rng.integers(0, len(base), n_classes)]
    jitter = rng.uniform(-0.12, 0.12, size=(n_classes, 3))
    rgb = np.clip(pick + jitter, 0.0, 1.0)
    return np.concatenate([rgb, np.ones((n_classes, 1))], axis=1)


def nearest_node_raster(sites_xyz: np.ndarray, width: int = 1080) -> np.ndarray:
    """Index of the nearest node for every pixel of a plate carrée grid (height = width / 2)."""
    from scipy.spatial import cKDTree

    height = width // 2
    lat = 90.0 - (np.arange(height) + 0.5) * 180.0 / height
    lng = -180.0 + (np.arange(width) + 0.5) * 360.0 / width
    grid_lat, grid_lng = np.meshgrid(lat, lng, indexing="ij")
    _, nearest = cKDTree(sites_xyz).query(latlng_to_xyz(grid_lat.ravel(), grid_lng.ravel()))
    return nearest.reshape(height, width)


def render_set_map(
    lat: np.ndarray,
    lng: np.ndarray,
    labels: np.ndarray,
    title: str,
    path: str,
    *,
    nearest: np.ndarray | None = None,
    scatter_index: np.ndarray | None = None,
    dpi: int = 110,
) -> str:
    """Draw class territories pale and the nodes at (lat, lng) in their class colour; save a PNG.

    ``nearest`` is :func:`nearest_node_raster` of the nodes' sites (computed from (lat, lng) when absent;
    pass it to draw several sets of the same nodes without recomputing it). ``scatter_index`` limits the
    drawn nodes (territories still use all of them).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    colours = class_colours(int(labels.max()) + 1 if labels.size else 1)
    if nearest is None:
        nearest = nearest_node_raster(latlng_to_xyz(lat, lng))
    pale = colours[labels[nearest]]
    pale[..., :3] = 0.55 * pale[..., :3] + 0.45
    fig, ax = plt.subplots(figsize=(14, 7.2))
    ax.imshow(pale, extent=(-180, 180, -90, 90), interpolation="nearest")
    shown = slice(None) if scatter_index is None else scatter_index
    lat, lng, node_labels = np.asarray(lat)[shown], np.asarray(lng)[shown], labels[shown]
    size = float(np.clip(3000.0 / max(len(lat), 1), 0.3, 6.0))
    ax.scatter(lng, lat, c=colours[node_labels], s=size, marker="s", linewidths=0, rasterized=True)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.grid(color="0.85", linewidth=0.5)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def map_title(spec: GeoclassSetSpec, n_classes: int) -> str:
    from partition_gen.geoclass_sets import display_name

    return f"{display_name(spec.name)} — {spec.describe()} — {n_classes:,} classes"


def write_set_maps(sets, directory: str) -> list[str]:
    """One ``<set name>.png`` per set of a :class:`GeoclassSets`, node positions at their image-weighted centres."""
    from partition_gen import s2cells

    lat, lng = xyz_to_latlng(sets.node_xyz_sum)
    # The graph's triangulated sites, so the drawn territories are the graph's.
    nearest = nearest_node_raster(s2cells.cell_center_xyz(sets.cell_ids))
    # Beyond a few hundred thousand dots a scatter only costs time: draw a fixed random subset.
    shown = None
    if sets.n_nodes > MAX_DRAWN_NODES:
        shown = np.sort(np.random.default_rng(0).choice(sets.n_nodes, MAX_DRAWN_NODES, replace=False))
    paths = []
    for name in sets.set_names:
        title = map_title(sets.spec(name), sets.n_classes[name])
        out = os.path.join(directory, f"{name}.png")
        paths.append(
            render_set_map(lat, lng, sets.assignments[name], title, out, nearest=nearest, scatter_index=shown)
        )
    return paths
