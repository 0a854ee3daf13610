"""Training data: a task's distribution of programs (the paper's binding programs), split with no overlap.

Pure Python (tasks only). Every program is drawn by `make_programs(task, ...)`; this module only
decides *which* draws go where, asking the task's `TrainingSupport` what it cannot know itself:

- held-out combinations: a seeded share of the task's (variable, constant) pairs (binding: the 260
  (letter, digit) pairs) never appear as `x = d` in a training program; the `heldout` set holds
  programs whose chain root is such a pair;
- fixed evaluation sets (validation, test, held-out, longer programs, more hops than trained),
  each disjoint from the others;
- the training stream: program k of the run is a pure function of (data settings, k), so a
  resumed run sees exactly the batches an uninterrupted one would. With `train_programs=P` the
  stream is a finite pool of P programs visited in a fresh seeded order each epoch (the paper's
  15 epochs over 450k programs); without it every step draws new programs.

Disjointness is asserted by sha256 of the program text: no training program is an evaluation
program, and no evaluation set shares a program with another.

Supervision (`Supervision`) changes only what a training program's text carries and where its
loss is taken (`TrainingExample.targets`), never the evaluation sets, which are always the standard
single-query programs:
- `queries_per_program=N`: the program's own query and answer first, exactly the standard format,
  then N-1 more `#x: d` lines about other variables (`a=1\nb=a\n#b: 1\n#a: 1`);
- `line_targets`: at the newline ending each assignment line, the value that line leaves in its
  variable (predicted through the same output head as the answer);
- `relabel`: letters and digits renamed by a random permutation per program (the generator's
  distribution is unchanged); a relabelling that would assign a held-out (letter, digit) pair or
  produce an evaluation program is drawn again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from bindexp.errors import TaskError
from bindexp.tasks.interface import TrainingSupport
from bindexp.tasks.program import Program, derive_rng, run_program
from bindexp.tasks.registry import DEFAULT_TASK, get_task, make_programs

Pair = tuple[str, str]  # (variable, constant)
_MAX_ATTEMPTS = 1000


class DataError(TaskError):
    """Training data that cannot be drawn as asked (one line, fit for a CLI)."""


@dataclasses.dataclass(frozen=True)
class Supervision:
    """What a training program carries beyond its own answer (see the module docstring)."""

    queries_per_program: int = 1
    line_targets: bool = False
    relabel: bool = False


@dataclasses.dataclass(frozen=True)
class TrainingExample:
    """A training text and its supervised targets: (index of the character whose token predicts
    the target, the target's text). The program's own answer is always the first target."""

    text: str
    targets: tuple[tuple[int, str], ...]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def training_support(task: str) -> TrainingSupport:
    """What training on `task` needs (DataError for a task that declares none)."""
    support = get_task(task).training
    if support is None:
        raise DataError(f"task {task!r} cannot be trained on: it declares no training support")
    return support


def heldout_pairs(fraction: float, data_seed: int, task: str = DEFAULT_TASK) -> frozenset[Pair]:
    """A seeded `fraction` of the task's (variable, constant) pairs, the same for the same seed."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"heldout_fraction must be in [0, 1), got {fraction}")
    pairs = list(training_support(task).pairs)
    derive_rng("heldout-pairs", data_seed).shuffle(pairs)
    return frozenset(pairs[: round(fraction * len(pairs))])


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the training distribution and the evaluation sets are (all seeded by data_seed)."""

    seq_len: int = 16
    hops: tuple[int, ...] = (1, 2, 3, 4)
    data_seed: int = 0
    distractor_chains: int | None = None
    max_distractor_depth: int = 3
    spacing: str = "spaced"
    heldout_fraction: float = 0.1
    train_programs: int | None = None  # finite pool visited once per epoch; None: fresh draws
    n_eval: int = 256  # programs in each evaluation set
    longer_seq_lens: tuple[int, ...] = ()  # generalisation: programs longer than trained
    n_systematic_test: int = 0  # an extra test set of heuristic-wrong programs only
    supervision: Supervision = Supervision()
    task: str = DEFAULT_TASK  # a task that declares training support

    def options(self) -> dict[str, Any]:
        return {"distractor_chains": self.distractor_chains, "max_distractor_depth": self.max_distractor_depth,
                "spacing": self.spacing}

    @property
    def more_hops(self) -> tuple[int, ...]:
        """Generalisation: chain lengths the generator makes (up to its max_hops and seq_len) that
        training never shows."""
        return tuple(h for h in range(max(self.hops) + 1, min(training_support(self.task).max_hops, self.seq_len) + 1))

    def check(self) -> None:
        """Raise DataError if some set cannot be drawn; draws nothing expensive."""
        if not self.hops or len(set(self.hops)) != len(self.hops):
            raise DataError(f"hops must be distinct values, got {list(self.hops)}")
        if self.train_programs is not None and self.train_programs < 1:
            raise DataError(f"train_programs must be at least 1 (or None), got {self.train_programs}")
        if self.n_eval < 1:
            raise DataError(f"n_eval must be at least 1, got {self.n_eval}")
        if self.supervision.queries_per_program < 1:
            raise DataError(f"queries_per_program must be at least 1, got {self.supervision.queries_per_program}")
        for hops in self.hops + self.more_hops:
            make_programs(self.task, 0, self.seq_len, self.data_seed, hops=hops, **self.options())
        for seq_len in self.longer_seq_lens:
            for hops in self.hops:
                make_programs(self.task, 0, seq_len, self.data_seed, hops=hops, **self.options())
        heldout_pairs(self.heldout_fraction, self.data_seed, self.task)


class ProgramData:
    """The evaluation sets (drawn once) and the training stream of one data specification."""

    def __init__(self, spec: DataSpec):
        spec.check()
        self.spec = spec
        self.support = training_support(spec.task)
        self.heldout = heldout_pairs(spec.heldout_fraction, spec.data_seed, spec.task)
        self._pool_order: dict[int, list[int]] = {}
        self._pool_examples: dict[int, TrainingExample] = {}
        self.eval_sets: dict[str, list[Program]] = {}
        clean = self._has_no_heldout_pair
        self._add_eval_set("validation", spec.seq_len, spec.hops, clean)
        self._add_eval_set("test", spec.seq_len, spec.hops, clean)
        if self.heldout:
            self._add_eval_set("heldout", spec.seq_len, spec.hops, lambda p: self.support.root_pair(p) in self.heldout)
        if spec.n_systematic_test:
            self._add_eval_set("systematic", spec.seq_len, spec.hops, lambda p: clean(p) and not p.meta["heuristic"],
                               spec.n_systematic_test)
        for seq_len in spec.longer_seq_lens:
            self._add_eval_set(f"longer_len{seq_len}", seq_len, spec.hops, clean)
        for hops in spec.more_hops:
            self._add_eval_set(f"more_hops{hops}", spec.seq_len, (hops,), clean)
        self.eval_hashes = frozenset(text_hash(p.text) for ps in self.eval_sets.values() for p in ps)
        sizes = sum(len(ps) for ps in self.eval_sets.values())
        if len(self.eval_hashes) != sizes:
            raise AssertionError("two evaluation sets share a program")
        self._eval_texts = frozenset(p.text for ps in self.eval_sets.values() for p in ps)

    def _has_no_heldout_pair(self, program: Program) -> bool:
        return not (self.support.constant_pairs(program) & self.heldout)

    def _add_eval_set(self, name: str, seq_len: int, hops: Iterable[int], accept: Callable[[Program], bool],
                      size: int | None = None) -> None:
        taken = {p.text for ps in self.eval_sets.values() for p in ps}
        hops = tuple(hops)
        programs = []
        for i in range(self.spec.n_eval if size is None else size):
            program = self._draw(f"eval-{name}", i, seq_len, hops[i % len(hops)], accept, taken)
            taken.add(program.text)
            programs.append(program)
        self.eval_sets[name] = programs

    def _draw(self, stream: str, index: int, seq_len: int, hops: int,
              accept: Callable[[Program], bool], exclude: frozenset[str] | set[str]) -> Program:
        """The first accepted draw of sub-stream (stream, index): a pure function of its arguments."""
        for attempt in range(_MAX_ATTEMPTS):
            (program,) = make_programs(self.spec.task, 1, seq_len, self.spec.data_seed, stream=f"{stream}:{index}:{attempt}",
                                       exclude=exclude, hops=hops, **self.spec.options())
            if accept(program):
                return program
        raise DataError(f"could not draw an acceptable {stream} program of {seq_len} lines and {hops} hops; "
                        "lower heldout_fraction or change seq_len")

    # -- the training stream -------------------------------------------------------------------

    def source_index(self, k: int) -> int:
        """Which draw the k-th training program of the run is (the pool position in pool mode)."""
        pool = self.spec.train_programs
        if pool is None:
            return k
        epoch, position = divmod(k, pool)
        if epoch not in self._pool_order:
            order = list(range(pool))
            derive_rng("train-epoch-order", self.spec.data_seed, epoch).shuffle(order)
            self._pool_order = {epoch: order}  # one epoch at a time in memory
        return self._pool_order[epoch][position]

    def train_program(self, k: int) -> Program:
        """The k-th training program of the run (no held-out pair, no evaluation program), relabelled
        when the supervision asks for it."""
        j = self.source_index(k)
        hops = self.spec.hops[j % len(self.spec.hops)]
        program = self._draw("train", j, self.spec.seq_len, hops, self._has_no_heldout_pair, self._eval_texts)
        if self.spec.supervision.relabel:
            program = self._relabelled(program, j)
        if text_hash(program.text) in self.eval_hashes:
            raise AssertionError(f"training program {k} is an evaluation program")
        return program

    def _relabelled(self, program: Program, j: int) -> Program:
        for attempt in range(_MAX_ATTEMPTS):
            relabelled = self.support.relabel(program, derive_rng("train-relabel", self.spec.data_seed, j, attempt))
            if self._has_no_heldout_pair(relabelled) and relabelled.text not in self._eval_texts:
                return relabelled
        raise DataError("could not relabel a training program without a held-out pair; lower heldout_fraction")

    def train_example(self, k: int) -> TrainingExample:
        """Program k of the stream with its answer appended, plus what the supervision adds: what
        the model is trained on."""
        j = self.source_index(k)
        if j in self._pool_examples:
            return self._pool_examples[j]
        example = supervised_example(self.train_program(k), self.spec.supervision,
                                     derive_rng("train-queries", self.spec.data_seed, j), self.support)
        if self.spec.train_programs is not None:
            self._pool_examples[j] = example
        return example

    def train_examples(self, step: int, batch_size: int) -> list[TrainingExample]:
        """The batch of training step `step` (0-based): programs step*B .. step*B+B-1."""
        return [self.train_example(step * batch_size + row) for row in range(batch_size)]


def supervised_example(program: Program, supervision: Supervision, rng,
                       support: TrainingSupport | None = None) -> TrainingExample:
    """`program` with its answer, the supervision's extra queries and its line targets (`support`:
    the program's task's, by default)."""
    text = program.text + program.answer_text
    targets = [(len(program.text) - 1, program.answer_text)]
    if supervision.queries_per_program == 1 and not supervision.line_targets:
        return TrainingExample(text, tuple(targets))
    support = support or training_support(program.task)
    values = run_program(program.code)
    for name, value in support.extra_queries(program, values, supervision.queries_per_program - 1, rng):
        text += f"\n#{name}: "
        targets.append((len(text) - 1, str(value)))
        text += str(value)
    if supervision.line_targets:
        ends = [i for i, char in enumerate(program.code) if char == "\n"]
        targets += [(end, str(value)) for end, value in zip(ends, support.line_values(program, values))]
    return TrainingExample(text, tuple(targets))
