"""Names of geoclass sets: the PlaNet set's name and how a set is shown in tables, maps and figures.

A leaf module (no project imports), so every other module can use it without an import circle.
"""

from __future__ import annotations

import re

# The PlaNet set: both its name in the artifacts (sets.json, model heads, partitions) and its kind.
PLANET = "planet"
PLANET_DISPLAY = "PlaNet"
_MERGED = re.compile(r"^set(\d+)$")


def merged_set_index(set_name: str) -> int | None:
    """``set3`` -> 3 for the merged (CPlaNet) sets ``set<i>``; None for any other name."""
    match = _MERGED.match(set_name)
    return int(match.group(1)) if match else None


def display_name(set_name: str) -> str:
    """``set3`` -> "ClassSet 3", ``planet`` -> "PlaNet"; other names are shown as they are."""
    index = merged_set_index(set_name)
    if index is not None:
        return f"ClassSet {index}"
    return PLANET_DISPLAY if set_name == PLANET else set_name
