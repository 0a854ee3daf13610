"""The `Program` record every task returns, and running a program to get its answer.

Pure Python: nothing here imports torch or wandb.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import random
import re
import traceback
from typing import Any

from bindexp.errors import TaskError

Answer = int | bool
Span = tuple[int, int]  # character offsets [start, end) into `Program.text`


@dataclasses.dataclass(frozen=True)
class Program:
    """One generated program and everything known about it.

    `text` ends with the query comment (`#x: `, trailing space), so the answer is the next token.
    `answer` is what Python computes by executing `text` (see `execute_query`).
    `spans` maps role names (e.g. `root_value`, `query_var`, `final`) to character spans of `text`.
    `meta` holds task-specific, JSON-serialisable facts (hops, chain lines, heuristic labels...).
    """

    task: str
    text: str
    answer: Answer
    query_var: str
    seq_len: int
    seed: int = 0
    spans: dict[str, Span] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def code(self) -> str:
        """The program without its query comment."""
        return self.text[: self.text.rindex("#")]

    @property
    def answer_text(self) -> str:
        return str(self.answer)

    def span_text(self, role: str) -> str:
        start, end = self.spans[role]
        return self.text[start:end]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Program:
        """The inverse of `to_dict` (also after a JSON round trip: spans come back as tuples);
        keys that are not fields are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["spans"] = {role: tuple(span) for role, span in values.get("spans", {}).items()}
        return cls(**values)


# The only names a program may call or catch; exec sees nothing else from builtins.
_SAFE_BUILTINS = {"range": range, "len": len, "ZeroDivisionError": ZeroDivisionError}


def run_program(text: str) -> dict[str, Any]:
    """Run `text` as Python with a minimal set of builtins; return its variables.

    The text is first checked against the whitelist of `check_program_syntax` (TaskError naming
    the line if it fails), so text from anywhere (a programs file, a researcher's generator) runs
    only if it is made of the statements bindexp's own generators emit. An error while running
    (a name read before it is assigned, an uncaught division by zero) is a TaskError too.
    """
    tree = check_program_syntax(text)
    namespace: dict[str, Any] = {"__builtins__": _SAFE_BUILTINS}
    try:
        exec(compile(tree, "<program>", "exec"), namespace)  # noqa: S102 - whitelisted syntax only
    except Exception as err:  # noqa: BLE001 - any failure of a program is the program's fault
        line = next((f.lineno for f in reversed(traceback.extract_tb(err.__traceback__))
                     if f.filename == "<program>"), None)
        raise TaskError(f"line {line}: the program fails with {type(err).__name__}: {err}") from None
    del namespace["__builtins__"]
    return namespace


class _ProgramChecker:
    """The whitelist behind `check_program_syntax`; each refusal names the line and the construct."""

    def __init__(self, tree: ast.Module) -> None:
        # names ever bound to a list literal: they may only be iterated, indexed or measured
        self.lists = {node.targets[0].id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                      and isinstance(node.value, ast.List) and isinstance(node.targets[0], ast.Name)}

    def refuse(self, node: ast.AST, what: str) -> TaskError:
        return TaskError(f"line {getattr(node, 'lineno', '?')}: {what} is not allowed in a program")

    def statements(self, body: list[ast.stmt], loops: int) -> None:
        for node in body:
            self.statement(node, loops)

    def statement(self, node: ast.stmt, loops: int) -> None:
        if isinstance(node, ast.Assign):
            self.assign(node)
        elif isinstance(node, ast.AugAssign):
            self.store(node.target)
            if node.target.id in self.lists:
                raise self.refuse(node, f"changing the list {node.target.id!r}")
            self.binary(node, node.op, node.target, node.value, 1)
        elif isinstance(node, ast.For):
            if loops >= MAX_LOOP_DEPTH:
                raise self.refuse(node, "a loop inside a loop")
            if node.orelse:
                raise self.refuse(node, "for ... else")
            self.store(node.target)
            self.iterable(node.iter)
            self.statements(node.body, loops + 1)
        elif isinstance(node, ast.If):
            self.expression(node.test, 1)
            self.statements(node.body, loops)
            self.statements(node.orelse, loops)
        elif isinstance(node, ast.Try) and not node.orelse and not node.finalbody:
            self.statements(node.body, loops)
            for handler in node.handlers:
                if not (isinstance(handler.type, ast.Name) and handler.type.id == "ZeroDivisionError"
                        and handler.name is None):
                    raise self.refuse(handler, "an except clause other than 'except ZeroDivisionError:'")
                self.statements(handler.body, loops)
        else:
            raise self.refuse(node, _describe(node))

    def assign(self, node: ast.Assign) -> None:
        if len(node.targets) != 1:
            raise self.refuse(node, "a chained assignment")
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Tuple):  # a, b = b, a + b
            if not (isinstance(value, ast.Tuple) and len(value.elts) == len(target.elts)):
                raise self.refuse(node, "unpacking anything but a tuple of the same length")
            for name in target.elts:
                self.store(name)
                if name.id in self.lists:
                    raise self.refuse(node, f"unpacking into the list {name.id!r}")
            for item in value.elts:
                self.expression(item, 1)
            return
        self.store(target)
        if target.id in self.lists:
            if not isinstance(value, ast.List):
                raise self.refuse(node, f"assigning anything but a list literal to the list {target.id!r}")
            if len(value.elts) > MAX_LIST or not all(_literal(item) for item in value.elts):
                raise self.refuse(node, f"a list of anything but at most {MAX_LIST} numbers")
            return
        self.expression(value, 1)

    def store(self, node: ast.expr) -> None:
        if not isinstance(node, ast.Name):
            raise self.refuse(node, f"assigning to {_describe(node)}")
        self.name(node)

    def name(self, node: ast.Name) -> None:
        if not _NAME.match(node.id) or node.id in _BUILTIN_NAMES:
            raise self.refuse(node, f"the name {node.id!r}")

    def iterable(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name) and node.id in self.lists:
            return
        if not (isinstance(node, ast.Call) and _called(node) == "range" and 1 <= len(node.args) <= 3
                and not node.keywords and all(_literal(arg) for arg in node.args)):
            raise self.refuse(node, "a loop over anything but range(<numbers>) or a list")
        try:
            steps = len(range(*(ast.literal_eval(arg) for arg in node.args)))
        except ValueError:  # range(1, 5, 0)
            raise self.refuse(node, "a range with step 0") from None
        if steps > MAX_ITERATIONS:
            raise self.refuse(node, f"a loop of more than {MAX_ITERATIONS} iterations")

    def expression(self, node: ast.expr, depth: int) -> None:
        """A number or truth value computed from names and constants."""
        if depth > MAX_DEPTH:
            raise self.refuse(node, f"an expression nested more than {MAX_DEPTH} deep")
        if isinstance(node, ast.Constant):
            if not _literal(node):
                raise self.refuse(node, f"the constant {node.value!r} (only whole numbers up to "
                                        f"{MAX_CONSTANT} and True/False)")
        elif isinstance(node, ast.Name):
            self.name(node)
            if node.id in self.lists:
                raise self.refuse(node, f"using the list {node.id!r} other than in a loop, len() or [index]")
        elif isinstance(node, ast.BinOp):
            self.binary(node, node.op, node.left, node.right, depth)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            self.expression(node.operand, depth + 1)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.expression(value, depth + 1)
        elif isinstance(node, ast.Compare) and all(isinstance(op, _COMPARISONS) for op in node.ops):
            for value in [node.left, *node.comparators]:
                self.expression(value, depth + 1)
        elif isinstance(node, ast.Subscript):
            if not (isinstance(node.value, ast.Name) and node.value.id in self.lists):
                raise self.refuse(node, "indexing anything but a list")
            self.expression(node.slice, depth + 1)
        elif isinstance(node, ast.Call) and _called(node) == "len":
            if node.keywords or len(node.args) != 1 or not (
                    isinstance(node.args[0], ast.Name) and node.args[0].id in self.lists):
                raise self.refuse(node, "len() of anything but a list")
        else:
            raise self.refuse(node, _describe(node))

    def binary(self, node: ast.AST, op: ast.operator, left: ast.expr, right: ast.expr, depth: int) -> None:
        if not isinstance(op, _ARITHMETIC):
            raise self.refuse(node, f"the operator {type(op).__name__}")
        if isinstance(op, ast.Mult) and not (_literal(left) or _literal(right)):
            raise self.refuse(node, "multiplying two variables")  # a loop could square a value to any size
        self.expression(left, depth + 1)
        self.expression(right, depth + 1)


MAX_CONSTANT = 10**6
MAX_LIST = 100
MAX_ITERATIONS = 1000
MAX_LOOP_DEPTH = 1
MAX_DEPTH = 32
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # no leading underscore, so no dunder names
_BUILTIN_NAMES = frozenset(dir(builtins))  # open, getattr, range ... are never variables
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_KINDS = {"Expr": "a bare expression", "Import": "an import", "ImportFrom": "an import", "While": "a while loop",
          "FunctionDef": "def", "AsyncFunctionDef": "def", "Lambda": "lambda", "ClassDef": "class", "With": "with",
          "Subscript": "indexing", "Slice": "a slice", "Global": "global", "Nonlocal": "nonlocal", "Delete": "del"}
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _literal(node: ast.expr) -> bool:
    """An int or bool constant within bounds, possibly negated."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return (isinstance(node, ast.Constant) and type(node.value) in (int, bool)
            and abs(node.value) <= MAX_CONSTANT)


def _called(node: ast.Call) -> str | None:
    return node.func.id if isinstance(node.func, ast.Name) else None


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"attribute access (.{node.attr})"
    if isinstance(node, ast.Call):
        return f"calling {_called(node) or 'anything but a name'}() here (only range() as a loop's iterable and len(list))"
    kind = type(node).__name__
    return _KINDS.get(kind, f"{kind} ({'statement' if isinstance(node, ast.stmt) else 'expression'})")


def check_program_syntax(text: str) -> ast.Module:
    """Parse `text` and check it uses only what bindexp's task generators emit; return the tree.

    Allowed: assignments to plain names (`a = 3`, `a, b = b, a + b`, `items = [1, 2]`), augmented
    assignment, `for` over `range(<numbers>)` or a list (no nested loops), `if`/`elif`/`else`,
    `try: ... except ZeroDivisionError:`; expressions of names, whole-number and True/False
    constants, `+ - * // %` (`*` with a constant), comparisons, `and`/`or`/`not`, `len(list)` and
    `list[index]`. Nothing else: no attribute access, calls, imports, names starting with `_` or
    shadowing a builtin, def/lambda/class/with/while. Raises TaskError naming the first bad line.
    """
    if not isinstance(text, str):
        raise TaskError(f"a program must be text, got {type(text).__name__}")
    try:
        tree = ast.parse(text, "<program>", "exec")
    except SyntaxError as err:
        raise TaskError(f"line {err.lineno}: not valid Python ({err.msg})") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise TaskError(f"not a program bindexp can read ({type(err).__name__})") from None
    _ProgramChecker(tree).statements(tree.body, 0)
    return tree


def execute_query(text: str, query_var: str) -> Answer:
    """Run `text` as Python and return the value of `query_var` afterwards.

    This is the single source of truth for labels: every task's `answer` must equal it.
    """
    namespace = run_program(text)
    if query_var not in namespace:
        raise TaskError(f"program never assigns its query variable {query_var!r}")
    return namespace[query_var]


def derive_rng(*parts: object) -> random.Random:
    """A random generator seeded from a stable hash of `parts`.

    Different (task, options, seq_len, seed, index) tuples give independent streams, so a program
    of length L+1 does not start with the program of length L, and the same tuple always gives the
    same program on every machine and Python version.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def finish_program(task: str, lines: list[str], query_var: str, length: int, **meta) -> Program:
    """Append the query comment, run the code for the answer, and record the basic spans."""
    text = "\n".join(lines) + f"\n#{query_var}: "
    query_at = len(text) - len(query_var) - 2
    return Program(
        task=task,
        text=text,
        answer=execute_query(text, query_var),
        query_var=query_var,
        seq_len=length,
        spans={"query_var": (query_at, query_at + len(query_var)), "final": (len(text) - 1, len(text))},
        meta={"length": length, **meta},
    )


def check_length(length: int, minimum: int = 1) -> None:
    if length < minimum:
        raise TaskError(f"length must be at least {minimum}, got {length}")
