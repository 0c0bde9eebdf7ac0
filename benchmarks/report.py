"""Render bench/results.json as bench/REPORT.md (the README shows this file's tables).

Accuracy tables (keys holding ``{"thresholds_km": [...], "methods": {...}}``) are laid out like the paper's
Tables 2 and 3; every other measure becomes a two-column table of its flattened figures.
"""

from __future__ import annotations

import json

from benchmarks.results import RESULTS_PATH

COMMAND = "make bench   # = python -m benchmarks.run_all"


def _flatten(prefix: str, value, out: list[tuple[str, object]]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else key, value[key], out)
    else:
        out.append((prefix, value))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, list) and len(value) > 12:
        return f"[{len(value)} values]"
    return str(value)


def accuracy_table(block: dict) -> str:
    """A Markdown table like the paper's Table 2 (paper row order, best value per column in bold)."""
    from partition_gen.evaluation import to_markdown

    return to_markdown(block, "Geolocational accuracies [%]").strip()


def _is_accuracy_block(value) -> bool:
    return isinstance(value, dict) and "thresholds_km" in value and "methods" in value


def render(results: dict) -> str:
    parts = [f"# Benchmark report\n\nProduced by `{COMMAND}`; raw figures in `bench/results.json`.\n"]
    machine = next((v.get("machine") for v in results.values() if isinstance(v, dict) and "machine" in v), None)
    if machine:
        parts.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "\n")
    for key in sorted(results):
        measure = results[key]
        parts.append(f"## {key}\n")
        if isinstance(measure, dict) and measure.get("summary"):
            parts.append(str(measure["summary"]) + "\n")
        tables = {k: v for k, v in measure.items() if _is_accuracy_block(v)} if isinstance(measure, dict) else {}
        for name, block in tables.items():
            parts.append(f"### {name}\n\n{accuracy_table(block)}\n")
        rest = {k: v for k, v in measure.items() if k not in tables and k not in ("machine", "summary")}
        rows: list[tuple[str, object]] = []
        _flatten("", rest, rows)
        if rows:
            parts.append("| figure | value |\n|---|---:|")
            parts.extend(f"| {k} | {_fmt(v)} |" for k, v in rows)
            parts.append("")
    return "\n".join(parts)


def write_report() -> str:
    results = json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else {}
    path = RESULTS_PATH.parent / "REPORT.md"
    path.write_text(render(results))
    return str(path)


if __name__ == "__main__":
    print(write_report())
