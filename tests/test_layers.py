"""Guards docs/ARCHITECTURE.md, section "Layers": a module imports only from its own package or from
lower layers (so sweeps and results do not import each other, nor io, plots and models), every
package is in the table, layers 0 (errors, vocab, stats) and 1 (tasks) import no torch, wandb,
pandas or matplotlib, and inside interventions the rooms import only downwards too (results <
engine < methods, readouts)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = 'docs/ARCHITECTURE.md, section "Layers"'
LAYERS = {"errors": 0, "vocab": 0, "stats": 0, "tasks": 1, "models": 2, "io": 2, "plots": 2, "interventions": 3,
          "training": 3, "runs": 4, "jobs": 5, "sweeps": 6, "results": 6}
ROOMS = {"results": 0, "engine": 1, "methods": 2, "readouts": 2}  # inside bindexp/interventions/
HEAVY = {"torch", "wandb", "transformers", "nnsight", "tokenizers", "pandas", "matplotlib"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _package(module: str) -> str | None:
    """`bindexp.io.folder` -> `runs`; None for modules outside bindexp and for `bindexp` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "bindexp" and len(parts) > 1 else None


def _layer(module: str) -> int | None:
    package = _package(module)
    return LAYERS.get(package) if package else None


def _modules():
    """(path, its package) for every module below bindexp/ (not bindexp/__init__.py)."""
    for path in sorted((ROOT / "bindexp").rglob("*.py")):
        first = path.relative_to(ROOT / "bindexp").parts[0].removesuffix(".py")
        if first != "__init__":
            yield path, first


def test_every_package_is_in_the_table():
    missing = sorted({package for _, package in _modules() if package not in LAYERS})
    assert not missing, f"add {missing} to {SECTION} and to LAYERS here"


def test_the_table_in_the_docs_matches():
    rows = re.findall(r"^\| (\d) \| `bindexp/(\w+)(?:\.py)?/?` \|", (ROOT / "docs" / "ARCHITECTURE.md").read_text(),
                      flags=re.MULTILINE)
    assert {package: int(layer) for layer, package in rows} == LAYERS, SECTION


def test_no_module_imports_a_higher_layer_or_a_sibling():
    problems = []
    for path, own in _modules():
        for module in _imports(path):
            other = _package(module)
            if other is None or other == own or other not in LAYERS:
                continue
            if LAYERS[other] >= LAYERS[own]:
                problems.append(f"{path.relative_to(ROOT)} (layer {LAYERS[own]}) imports {module} "
                                f"(layer {LAYERS[other]})")
    assert not problems, f"against {SECTION}:\n" + "\n".join(problems)


def test_lower_layers_are_pure_python():
    problems = [f"{path.relative_to(ROOT)} imports {module}"
                for path, package in _modules() if LAYERS.get(package, 9) <= 1
                for module in _imports(path) if module.split(".")[0] in HEAVY]
    assert not problems, f"against {SECTION}:\n" + "\n".join(problems)


def test_interventions_rooms_import_downwards():
    problems = []
    for path in sorted((ROOT / "bindexp" / "interventions").rglob("*.py")):
        parts = path.relative_to(ROOT / "bindexp" / "interventions").parts
        own = parts[0] if len(parts) > 1 else None
        assert own is None or own in ROOMS, f"add interventions/{own}/ to ROOMS and to {SECTION}"
        for module in _imports(path):
            names = module.split(".")
            if names[:2] != ["bindexp", "interventions"] or len(names) < 3 or own is None:
                continue
            other = names[2]
            if other != own and ROOMS.get(other, 9) >= ROOMS[own]:
                problems.append(f"{path.relative_to(ROOT)} ({own}) imports {module} ({other})")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from bindexp.runs.settings import RunSettings\nimport torch\n")
    assert list(_imports(bad)) == ["bindexp.runs.settings", "torch"]
    assert _layer("bindexp.runs.settings") > _layer("bindexp.tasks.program")
    assert _layer("bindexp.sweeps.local") == _layer("bindexp.results.records")  # siblings: refused above
    assert _layer("bindexp.io.grids") == _layer("bindexp.plots.heatmap") == _layer("bindexp.models.sites")
    assert _package("bindexp.errors") == "errors" and _package("bindexp") is None
