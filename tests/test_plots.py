"""accuracy.png and curves.png: one colour and one line style per method, families grouped; curves with
y-labels, the legend off the data, the exported epoch marked."""

from __future__ import annotations

import numpy as np

from partition_gen import plots
from partition_gen.evaluation import THRESHOLDS_KM, accuracy_dict, accuracy_values, plot_accuracy

PAPER_METHODS = ["PlaNet"] + [f"ClassSet {i}" for i in range(1, 6)] + [
    "Average[1-5]", "SimpleSum[1-5]", "CPlaNet[1-2]", "CPlaNet[1-3]", "CPlaNet[1-4]", "CPlaNet[1-5]",
    "CPlaNet[1-5,PlaNet]",
]


def _dash(style):
    return style if isinstance(style, str) else (style[0], tuple(style[1]))


def test_every_method_has_its_own_colour_and_line_style_and_families_share_a_marker():
    styles = plots.method_styles(PAPER_METHODS)
    colours = [styles[n]["color"] for n in PAPER_METHODS]
    dashes = [(plots.method_family(n), _dash(styles[n]["linestyle"])) for n in PAPER_METHODS]
    assert len(set(colours)) == len(PAPER_METHODS)
    assert len(set(dashes)) == len(PAPER_METHODS)
    for family in ("ClassSet", "CPlaNet"):
        assert len({styles[n]["marker"] for n in PAPER_METHODS if plots.method_family(n) == family}) == 1
    # SimpleSum is drawn above CPlaNet, so an equal curve does not hide it.
    assert styles["SimpleSum[1-5]"]["zorder"] > styles["CPlaNet[1-5]"]["zorder"]
    assert _dash(styles["SimpleSum[1-5]"]["linestyle"]) != _dash(styles["CPlaNet[1-5]"]["linestyle"])


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_accuracy_plot_groups_methods_in_table_order_with_the_legend_beside(tmp_path):
    report = {"thresholds_km": list(THRESHOLDS_KM), "methods": {}}
    for i, name in enumerate(reversed(PAPER_METHODS)):
        report["methods"][name] = {"n": 10, "accuracy": accuracy_dict(np.linspace(0.01, 0.5 + i / 50, 9), THRESHOLDS_KM)}
    plot_accuracy(report, str(tmp_path / "accuracy.png"), "t")
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    names = PAPER_METHODS
    values = np.array([accuracy_values(report["methods"][n], THRESHOLDS_KM) for n in names])
    fig = plots.accuracy_figure(report, "t", names, values)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == names
    assert not _overlaps(legend.get_window_extent(), ax.get_window_extent())


def test_curves_have_y_labels_the_legend_off_the_data_and_the_exported_epoch():
    history = {}
    for name in ("set1", "planet"):
        for metric in ("loss", "top1", "top5"):
            history[f"{name}_{metric}"] = list(np.linspace(1, 2, 6))
            history[f"val_{name}_{metric}"] = list(np.linspace(1, 1.5, 6))
    fig = plots.curves_figure(history, ["set1", "planet"], exported_epoch=4)
    fig.canvas.draw()
    assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy loss", "top-1 accuracy", "top-5 accuracy"]
    for ax in fig.axes:
        assert ax.get_legend() is None
        marks = [line for line in ax.get_lines() if line.get_label() == "exported model (epoch 4)"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [4, 4]
        assert not _overlaps(fig.legends[0].get_window_extent(), ax.get_window_extent())
    # Without an explicit epoch, the last one is the exported one.
    last = plots.curves_figure(history, ["set1"])
    assert any(line.get_label() == "exported model (epoch 6)" for line in last.axes[0].get_lines())
    assert plots.training_curves_png(history, ["set1"])[:4] == b"\x89PNG"
