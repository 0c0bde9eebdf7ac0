"""The project's import graph, read from the source with ``ast`` (nothing is imported or executed).

Layering: ``schemas`` <- ``partition_gen`` / ``imagery`` / ``trainer`` <- ``pipelines`` <- ``benchmarks``.
The test fails on any cycle between the project's modules (imports inside functions count: a lazy import
hides a circle, it does not remove it), on Beam or TensorFlow anywhere in the NumPy cores, and on an
import that runs back up the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "partition_gen", "imagery", "sampledata", "trainer", "pipelines", "benchmarks")
# What each package may import from the project (besides itself).
ALLOWED = {
    "schemas": set(),
    "partition_gen": {"schemas"},
    "imagery": {"schemas"},
    "sampledata": {"schemas", "partition_gen"},
    "trainer": {"schemas", "partition_gen", "imagery"},
    "pipelines": {"schemas", "partition_gen", "imagery", "sampledata", "trainer"},
    "benchmarks": {"schemas", "partition_gen", "imagery", "sampledata", "trainer", "pipelines"},
}
HEAVY = ("apache_beam", "tensorflow", "keras")
NUMPY_CORES = ("partition_gen", "imagery", "sampledata")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []:
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name imported anywhere in the file (top level, functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> nx.DiGraph:
    modules = project_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for name in imported_names(path, module):
            target = name if name in modules else name.rpartition(".")[0]
            if target in modules and target != module:
                graph.add_edge(module, target)
    return graph


def test_the_graph_reads_the_real_tree():
    graph = import_graph()
    # A broken reader would find no edges and pass every check below.
    assert graph.number_of_nodes() > 30
    assert graph.has_edge("pipelines.run_all", "pipelines.batch_predict") or graph.out_degree("pipelines.run_all") > 3


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    # A package's __init__ re-exporting its submodules is not a circle of logic; leave those edges out.
    edges = [(a, b) for a, b in graph.edges if not (b == a.rpartition(".")[0])]
    cycles = list(nx.simple_cycles(nx.DiGraph(edges)))
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("package", NUMPY_CORES)
def test_numpy_cores_import_neither_beam_nor_tensorflow(package):
    offenders = []
    for module, path in project_modules().items():
        if module.split(".")[0] != package:
            continue
        for name in imported_names(path, module):
            if name.split(".")[0] in HEAVY:
                offenders.append(f"{module} imports {name}")
    assert not offenders, offenders


def test_imports_only_run_down_the_layers():
    offenders = []
    for source, target in import_graph().edges:
        a, b = source.split(".")[0], target.split(".")[0]
        if a != b and b not in ALLOWED[a]:
            offenders.append(f"{source} -> {target}")
    assert not offenders, offenders


def test_the_checker_catches_a_lazy_import_cycle(tmp_path):
    # The same reader on a two-module package whose circle hides inside a function.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n    import apache_beam\n")
    names_b = imported_names(tmp_path / "pkg" / "b.py", "pkg.b")
    assert "pkg.a" in names_b and "apache_beam" in names_b
    assert "pkg.b" in imported_names(tmp_path / "pkg" / "a.py", "pkg.a")
