"""Plots of results: accuracy against distance per method, and training curves per head.

Accuracy (``accuracy.png``): one line per method, each with its own colour and its own line style. The paper's
method families are grouped, each in one hue family with one marker, in Table 2's order: PlaNet (black),
single ClassSets (blues, dotted), Average (oranges, dash-dot), SimpleSum (purples, dashed), CPlaNet (reds,
solid, drawn thickest and underneath, so that an equal SimpleSum line stays visible on top of it). The legend
sits beside the axes, in the same order.

Training curves (``curves.png``): loss, top-1 and top-5 accuracy against epochs per head, train solid and eval
dashed, y-axes labelled, the legend below the panels, the exported epoch marked by a vertical line.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence

import numpy as np

# family -> (colormap, marker, line styles cycled within the family, line width, z-order)
_FAMILIES = {
    "PlaNet": ("Greys", "s", ["-"], 2.2, 3.0),
    "ClassSet": ("Blues", "o", [(0, (1, 1.5)), (0, (1, 3)), (0, (2, 1.5)), (0, (2, 3)), (0, (3, 1.5)), (0, (3, 3))],
                 1.3, 2.0),
    "Average": ("Oranges", "D", [(0, (6, 2, 1, 2)), (0, (6, 2, 1, 2, 1, 2)), (0, (8, 2, 2, 2)), (0, (4, 2, 1, 2))],
                1.4, 2.5),
    "SimpleSum": ("Purples", "v", [(0, (5, 2)), (0, (3, 2)), (0, (8, 3)), (0, (5, 4))], 1.5, 4.0),
    "CPlaNet": ("Reds", "^", ["-", (0, (10, 2)), (0, (10, 2, 2, 2)), (0, (14, 3)), (0, (10, 2, 2, 2, 2, 2))],
                2.4, 1.0),
    "other": ("Greens", "x", [(0, (2, 2)), (0, (4, 1)), (0, (1, 1, 4, 1)), (0, (6, 6))], 1.3, 2.0),
}


def method_family(name: str) -> str:
    if name == "PlaNet":
        return "PlaNet"
    match = re.match(r"^(ClassSet|Average|SimpleSum|CPlaNet)\b", name)
    return match.group(1) if match else "other"


def method_styles(names: Sequence[str]) -> dict[str, dict]:
    """Matplotlib line properties per method: families share a hue and a marker, members differ in shade and
    dash pattern, so no two methods share a colour or a line style."""
    import matplotlib

    members: dict[str, list[str]] = {}
    for name in names:
        members.setdefault(method_family(name), []).append(name)
    styles = {}
    for family, group in members.items():
        cmap_name, marker, dashes, width, zorder = _FAMILIES[family]
        cmap = matplotlib.colormaps[cmap_name]
        shades = [0.85] if family == "PlaNet" and len(group) == 1 else np.linspace(0.45, 0.95, len(group))
        if family == "PlaNet":
            shades = np.linspace(1.0, 0.6, len(group))
        for i, name in enumerate(group):
            # Beyond the listed patterns, stretch the last one so every member still has its own.
            dash = dashes[i] if i < len(dashes) else (0, (1 + i, 1.5 + 0.5 * i))
            styles[name] = {
                "color": matplotlib.colors.to_hex(cmap(float(shades[i]))),
                "linestyle": dash,
                "marker": marker,
                "linewidth": width,
                "zorder": zorder,
            }
    return styles


def plot_accuracy(report: Mapping, path: str, title: str, names: Sequence[str], values: np.ndarray) -> None:
    """``values[i]``: accuracies (fractions) of method ``names[i]`` at ``report['thresholds_km']``."""
    import matplotlib.pyplot as plt

    fig = accuracy_figure(report, title, names, values)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_figure(report: Mapping, title: str, names: Sequence[str], values: np.ndarray):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = list(report["thresholds_km"])
    styles = method_styles(names)
    fig, ax = plt.subplots(figsize=(9.5, 5.2))
    for name, acc in zip(names, values):
        ax.plot(thresholds, np.asarray(acc, dtype=np.float64) * 100, markersize=4, label=name, **styles[name])
    ax.set_xscale("log")
    ax.set_xticks(thresholds)
    ax.set_xticklabels([str(t) for t in thresholds])
    ax.minorticks_off()
    ax.set_xlabel("distance threshold r [km]")
    ax.set_ylabel("photos located within r [%]")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=3.2)
    fig.tight_layout()
    return fig


CURVE_PANELS = (("loss", "cross-entropy loss"), ("top1", "top-1 accuracy"), ("top5", "top-5 accuracy"))


def training_curves_png(history: Mapping[str, Sequence[float]], set_names: Sequence[str],
                        exported_epoch: int | None = None) -> bytes:
    """Loss, top-1 and top-5 per head against epochs (train solid, eval dashed) as PNG bytes.

    ``exported_epoch`` (1-based; default: the last epoch) is marked by a vertical line in every panel.
    """
    import matplotlib.pyplot as plt

    fig = curves_figure(history, set_names, exported_epoch)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def curves_figure(history: Mapping[str, Sequence[float]], set_names: Sequence[str],
                  exported_epoch: int | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(5 * len(CURVE_PANELS), 4.3))
    n_epochs = max((len(v) for k, v in history.items() if k != "epoch_seconds"), default=0)
    exported = exported_epoch if exported_epoch is not None else (n_epochs or None)
    for ax, (metric, label) in zip(axes, CURVE_PANELS):
        for i, name in enumerate(set_names):
            color = f"C{i % 10}"
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(f"{prefix}{name}_{metric}")
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=color, marker=".",
                            label=f"{name} {'eval' if prefix else 'train'}")
        if exported:
            ax.axvline(exported, color="0.3", lw=1.0, ls=":", label=f"exported model (epoch {exported})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if n_epochs:
            ax.set_xlim(0.8, n_epochs + 0.2)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    rows = 1 + (len(labels) - 1) // 6 if labels else 0
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))
    return fig
