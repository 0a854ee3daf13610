"""Guards docs/ARCHITECTURE.md, section "One owner each" (tasks): everything that knows a task's name
lives in its package (`bindexp/tasks/<package>/`); generic code asks the task's `TaskSpec`.

Outside a task's package -- every module under bindexp/ but the task packages, the registry (its
table of built-in packages and the default task) and the public API in `bindexp/tasks/__init__.py`
-- no string constant is a task's name (`task == "counter"`), and no identifier or import names a
task that has a package of its own (`analyse_binding`, `bindexp.tasks.binding`). Docstrings,
comments and help texts may use the words."""

import ast
import importlib
import re
from pathlib import Path

from bindexp.tasks import get_task, task_names

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "bindexp" / "tasks"
ALLOWED = {TASKS / "registry.py", TASKS / "__init__.py"}


def _package_of(task: str) -> str:
    """The package under bindexp/tasks/ whose generator makes the task's programs."""
    return importlib.import_module(get_task(task).generate.__module__).__name__.split(".")[2]


def _owner(path: Path) -> str | None:
    """The task package a module belongs to (bindexp/tasks/<package>/...), else None."""
    parts = path.relative_to(TASKS).parts if path.is_relative_to(TASKS) else ()
    return parts[0] if len(parts) > 1 else None


def _names(path: Path):
    """(line, kind, text): every string constant but docstrings ("string"), and every identifier a
    module defines or reads and every bindexp import ("identifier")."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield line, "string", node.value
        elif isinstance(node, ast.Name):
            yield line, "identifier", node.id
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            yield line, "identifier", node.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bindexp"):
            yield line, "identifier", node.module
            for alias in node.names:
                yield line, "identifier", alias.asname or alias.name


def _problems(path: Path, tasks: dict[str, str]) -> list[str]:
    """`tasks`: task name -> its package. What `path` names that it should not."""
    owner = _owner(path)
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    packaged = {name for name, package in tasks.items() if package == name}  # tasks with a package of their own
    found = []
    for line, kind, text in _names(path):
        if kind == "string" and text in tasks and tasks[text] != owner:
            found.append(f"{where}:{line} names the task {text!r}")
        words = set(re.split(r"[^A-Za-z0-9]+|_", text.lower())) if kind == "identifier" else set()
        found += [f"{where}:{line} names the task {w!r} in {text}" for w in words & packaged if w != owner]
    return found


def test_no_module_outside_a_task_package_names_a_task():
    tasks = {name: _package_of(name) for name in task_names()}
    problems = [p for path in sorted((ROOT / "bindexp").rglob("*.py")) if path not in ALLOWED
                for p in _problems(path, tasks)]
    assert not problems, "ask the task's TaskSpec instead:\n" + "\n".join(problems)


def test_the_checker_sees_a_task_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""binding in a docstring is fine."""\nif task == "loop":\n    analyse_binding(text)\n'
                   'start = time.perf_counter()\n')
    found = _problems(bad, {"binding": "binding", "counter": "counter", "loop": "tracing"})
    assert [p.split(" names ")[1] for p in found] == ["the task 'loop'", "the task 'binding' in analyse_binding"]
