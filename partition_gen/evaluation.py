"""Evaluation (Eq. 5): accuracy at 1 ... 2500 km per method, as JSON, a Markdown table like the paper's
Table 2, and a PNG of accuracy against distance; plus the method names used everywhere.

Method names (as in the paper): "ClassSet i" (set ``set<i>`` alone), "PlaNet" (set ``planet`` alone),
"SimpleSum[1-5]", "CPlaNet[1-5]" (NormalizedSum), "CPlaNet[1-5,PlaNet]"; "Average[1-5]" is not a predictor but
the mean of the single sets' accuracies, computed here for every combined method over merged sets whose
single-set rows are present.

Which photos count: a photo is scored for a method when it has both a ground truth and a prediction by that
method. Photos with truth but no prediction (e.g. dead-lettered) are reported per method as ``n_missing``,
predictions without truth as ``n_without_truth``; neither changes the accuracies silently.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np

from partition_gen.combine import NORMALIZED_SUM, SIMPLE_SUM, Method
from partition_gen.geo import haversine_km
from partition_gen.naming import PLANET as PLANET_SET
from partition_gen.naming import PLANET_DISPLAY
from partition_gen.naming import display_name as display_set_name

THRESHOLDS_KM = (1, 5, 10, 25, 50, 100, 200, 750, 2500)
_MERGED = re.compile(r"^set(\d+)$")
_RULE_PREFIX = {NORMALIZED_SUM: "CPlaNet", SIMPLE_SUM: "SimpleSum"}
_PREFIX_RULE = {v: k for k, v in _RULE_PREFIX.items()}
_COMBINED = re.compile(r"^(CPlaNet|SimpleSum|Average)\[(.+)\]$")


# ------------------------------------------------------------------------------------------------ naming


def _set_label(set_names: Sequence[str]) -> str:
    """(set1, set2, set3, set5, planet) -> "1-3,5,PlaNet": runs of merged sets compress to ranges."""
    numbers = sorted(int(_MERGED.match(n).group(1)) for n in set_names if _MERGED.match(n))
    parts, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    parts += [display_set_name(n) for n in set_names if not _MERGED.match(n)]
    return ",".join(parts)


def _parse_label(label: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in label.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = map(int, part.split("-"))
            names += [f"set{i}" for i in range(lo, hi + 1)]
        elif part.isdigit():
            names.append(f"set{int(part)}")
        elif part == PLANET_DISPLAY:
            names.append(PLANET_SET)
        else:
            names.append(part)
    return tuple(names)


def method_name(set_names: Sequence[str], rule: str = NORMALIZED_SUM) -> str:
    if len(set_names) == 1:
        return display_set_name(set_names[0])
    return f"{_RULE_PREFIX[rule]}[{_set_label(set_names)}]"


def parse_method(name: str, available: Sequence[str]) -> Method:
    """A method from its display name; refuses sets the model/partitions do not have."""
    name = name.strip()
    match = _COMBINED.match(name)
    if match and match.group(1) != "Average":
        sets, rule = _parse_label(match.group(2)), _PREFIX_RULE[match.group(1)]
    elif name == PLANET_DISPLAY:
        sets, rule = (PLANET_SET,), SIMPLE_SUM
    elif re.fullmatch(r"ClassSet \d+", name):
        sets, rule = (f"set{int(name.split()[1])}",), SIMPLE_SUM
    elif name in available:
        sets, rule = (name,), SIMPLE_SUM
    else:
        raise ValueError(
            f"unknown method '{name}': expected 'ClassSet i', 'PlaNet', 'SimpleSum[...]' or 'CPlaNet[...]'"
        )
    unknown = [s for s in sets if s not in available]
    if unknown:
        raise ValueError(f"method '{name}' needs geoclass sets {unknown}, available: {', '.join(available)}")
    return Method(name=method_name(sets, rule), set_names=sets, rule=rule)


def standard_methods(set_names: Sequence[str]) -> list[Method]:
    """The methods of the paper's Table 2 that these sets allow."""
    merged = sorted((n for n in set_names if _MERGED.match(n)), key=lambda n: int(n[3:]))
    methods = [Method(display_set_name(n), (n,), SIMPLE_SUM) for n in set_names]
    combos = []
    if len(merged) >= 2:
        combos.append((tuple(merged), SIMPLE_SUM))
        if len(merged) > 2:
            combos.append((tuple(merged[:2]), NORMALIZED_SUM))
        combos.append((tuple(merged), NORMALIZED_SUM))
    if PLANET_SET in set_names and merged:
        combos.append((tuple(merged) + (PLANET_SET,), NORMALIZED_SUM))
    methods += [Method(method_name(s, r), s, r) for s, r in combos]
    return methods


def default_method(set_names: Sequence[str]) -> Method:
    """The nightly default: NormalizedSum over every set of the model."""
    names = tuple(set_names)
    rule = NORMALIZED_SUM if len(names) > 1 else SIMPLE_SUM
    return Method(method_name(names, rule), names, rule)


# ------------------------------------------------------------------------------------------------ scoring


def accuracy_at(distances_km: np.ndarray, thresholds_km: Sequence[float] = THRESHOLDS_KM) -> np.ndarray:
    """Eq. 5: the fraction of photos whose error is strictly below each threshold."""
    d = np.asarray(distances_km, dtype=np.float64)
    if d.size == 0:
        return np.full(len(thresholds_km), np.nan)
    return (d[:, None] < np.asarray(thresholds_km, dtype=np.float64)[None, :]).mean(axis=0)


def accuracy_dict(values: Sequence[float], thresholds_km: Sequence[float] = THRESHOLDS_KM) -> dict[str, float]:
    """Accuracies keyed by threshold as written in evaluation.json: ``{"1": 0.093, "5": ..., "2500": ...}``."""
    return {_threshold_key(t): float(v) for t, v in zip(thresholds_km, values, strict=True)}


def accuracy_values(row: dict, thresholds_km: Sequence[float] = THRESHOLDS_KM) -> list[float]:
    """A method row's accuracies in threshold order (rows hold them keyed by threshold)."""
    acc = row["accuracy"]
    if isinstance(acc, dict):
        return [float(acc[_threshold_key(t)]) for t in thresholds_km]
    return [float(a) for a in acc]


def _threshold_key(threshold_km: float) -> str:
    return str(int(threshold_km)) if float(threshold_km).is_integer() else str(threshold_km)


def _unique_index(ids: np.ndarray, what: str) -> np.ndarray:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what}: photo_id '{uniq[np.argmax(counts > 1)]}' appears {counts.max()} times")
    return uniq


def evaluate(
    pred_photo_ids: Sequence[str],
    pred_methods: Sequence[str],
    pred_lat: Sequence[float],
    pred_lng: Sequence[float],
    truth_photo_ids: Sequence[str],
    truth_lat: Sequence[float],
    truth_lng: Sequence[float],
    thresholds_km: Sequence[float] = THRESHOLDS_KM,
    pred_radius50_km: Sequence[float] | None = None,
    pred_radius90_km: Sequence[float] | None = None,
) -> dict:
    """Per-method accuracies (fractions) and counts; adds the Average[...] rows.

    With confidence radii (NaN where a row has none), a method whose rows have them also reports
    ``within_radius50`` / ``within_radius90``: the share of its scored photos whose error is within the radius.
    """
    truth_ids = np.asarray(truth_photo_ids).astype(str)
    order = np.argsort(truth_ids)
    truth_ids = truth_ids[order]
    _unique_index(truth_ids, "ground truth")
    t_lat = np.asarray(truth_lat, dtype=np.float64)[order]
    t_lng = np.asarray(truth_lng, dtype=np.float64)[order]
    ids = np.asarray(pred_photo_ids).astype(str)
    methods = np.asarray(pred_methods).astype(str)
    p_lat = np.asarray(pred_lat, dtype=np.float64)
    p_lng = np.asarray(pred_lng, dtype=np.float64)
    report = {"thresholds_km": list(thresholds_km), "n_truth": int(truth_ids.size), "methods": {}}
    for method in dict.fromkeys(methods.tolist()):
        rows = methods == method
        m_ids = ids[rows]
        _unique_index(m_ids, f"predictions of {method}")
        pos = np.searchsorted(truth_ids, m_ids)
        pos_clipped = np.minimum(pos, max(truth_ids.size - 1, 0))
        matched = (pos < truth_ids.size) & (truth_ids[pos_clipped] == m_ids) if truth_ids.size else np.zeros(m_ids.size, bool)
        dist = haversine_km(p_lat[rows][matched], p_lng[rows][matched], t_lat[pos_clipped[matched]], t_lng[pos_clipped[matched]])
        report["methods"][method] = {
            "n": int(matched.sum()),
            "n_missing": int(truth_ids.size - matched.sum()),
            "n_without_truth": int((~matched).sum()),
            "median_km": float(np.median(dist)) if dist.size else None,
            "accuracy": accuracy_dict(accuracy_at(dist, thresholds_km), thresholds_km),
        }
        for key, radii in (("within_radius50", pred_radius50_km), ("within_radius90", pred_radius90_km)):
            if radii is None:
                continue
            r = np.asarray(radii, dtype=np.float64)[rows][matched]
            has = np.isfinite(r)
            if has.any():
                report["methods"][method][key] = float(np.mean(dist[has] <= r[has]))
    _add_averages(report)
    return report


def _add_averages(report: dict) -> None:
    rows = report["methods"]
    for name in list(rows):
        match = _COMBINED.match(name)
        if not match or match.group(1) == "Average":
            continue
        sets = _parse_label(match.group(2))
        if not all(_MERGED.match(s) for s in sets):
            continue
        singles = [display_set_name(s) for s in sets]
        average = f"Average[{match.group(2)}]"
        if average in rows or not all(s in rows for s in singles):
            continue
        thresholds = report["thresholds_km"]
        accs = np.array([accuracy_values(rows[s], thresholds) for s in singles], dtype=np.float64)
        rows[average] = {
            "n": min(rows[s]["n"] for s in singles),
            "of": singles,
            "accuracy": accuracy_dict(accs.mean(axis=0), thresholds),
        }


def _row_order(name: str) -> tuple:
    """Table 2 order: PlaNet, ClassSet i, Average, SimpleSum, CPlaNet (fewer sets first), then others; a
    refined method ("CPlaNet[1-5]+R") right after its own row."""
    if name.endswith("+R"):
        return (*_row_order(name[:-2])[:2], name)
    if name == PLANET_DISPLAY:
        return (0, 0, name)
    if name.startswith("ClassSet "):
        return (1, int(name.split()[1]), name)
    match = _COMBINED.match(name)
    if match:
        rank = {"Average": 2, "SimpleSum": 3, "CPlaNet": 4}[match.group(1)]
        sets = _parse_label(match.group(2))
        return (rank, len(sets) + (0.5 if PLANET_SET in sets else 0), name)
    return (5, 0, name)


def to_markdown(report: dict, title: str = "Geolocational accuracies [%]") -> str:
    """A table laid out like the paper's Table 2, the best value of each column in bold."""
    thresholds = report["thresholds_km"]
    names = sorted(report["methods"], key=_row_order)
    values = np.array([accuracy_values(report["methods"][n], thresholds) for n in names], dtype=np.float64) * 100
    best = np.nanmax(np.round(values, 1), axis=0) if len(names) else []
    lines = [
        f"{title}",
        "",
        "| Models | " + " | ".join(f"{t} km" for t in thresholds) + " | n |",
        "|---|" + "---:|" * (len(thresholds) + 1),
    ]
    for name, row in zip(names, values):
        cells = []
        for j, v in enumerate(np.round(row, 1)):
            text = "–" if np.isnan(v) else f"{v:.1f}"
            cells.append(f"**{text}**" if not np.isnan(v) and v == best[j] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {report['methods'][name]['n']} |")
    return "\n".join(lines) + "\n"


def plot_accuracy(report: dict, path: str, title: str = "Accuracy against distance") -> None:
    """accuracy.png: one line per method in Table 2's order (styles in :mod:`partition_gen.plots`)."""
    from partition_gen import plots

    thresholds = report["thresholds_km"]
    names = sorted(report["methods"], key=_row_order)
    values = [accuracy_values(report["methods"][name], thresholds) for name in names]
    plots.plot_accuracy(report, path, title, names, np.asarray(values, dtype=np.float64).reshape(len(names), -1))


def write_report(report: dict, out_dir: str, title: str = "Geolocational accuracies [%]") -> dict[str, str]:
    """evaluation.json, evaluation.md and accuracy.png in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f) for k, f in (("json", "evaluation.json"), ("md", "evaluation.md"), ("png", "accuracy.png"))}
    for key, text in (("json", json.dumps(report, indent=2) + "\n"), ("md", to_markdown(report, title))):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, paths[key])
    plot_accuracy(report, paths["png"], title)
    return paths
