"""Imports go one way: tasks -> models -> interventions -> runs -> scripts; tasks stay pure Python."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"errors": 0, "stats": 0, "tasks": 1, "models": 2, "interventions": 3, "runs": 4, "sweeps": 5, "results": 5}
HEAVY = {"torch", "wandb", "transformers", "nnsight", "tokenizers", "pandas", "matplotlib"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if parts[0] == "bindexp" and len(parts) > 1 else None


def test_no_module_imports_a_higher_layer():
    problems = []
    for path in (ROOT / "bindexp").rglob("*.py"):
        own = _layer("bindexp." + path.relative_to(ROOT / "bindexp").parts[0].removesuffix(".py"))
        if own is None:
            continue
        for module in _imports(path):
            other = _layer(module)
            if other is not None and other > own:
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not problems, "\n".join(problems)


def test_task_layer_is_pure_python():
    problems = [f"{path.relative_to(ROOT)} imports {module}"
                for path in (ROOT / "bindexp" / "tasks").rglob("*.py")
                for module in _imports(path) if module.split(".")[0] in HEAVY]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from bindexp.runs.settings import EvalSettings\nimport torch\n")
    assert list(_imports(bad)) == ["bindexp.runs.settings", "torch"]
    assert _layer("bindexp.runs.settings") > _layer("bindexp.tasks.program")
