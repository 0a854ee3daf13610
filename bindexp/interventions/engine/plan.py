"""The plan every method starts from: the pairs' tokens, role -> position maps, the grid's axes
(layers, columns, heads) and the shared prefix's cache, made once before the first forward.

    plan = plan_grid(lm, pairs, site="resid_pre", shots=shots)
    result = get_method("exact")(plan, MethodOptions())
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from bindexp.errors import ModelError
from bindexp.interventions.results.grid import GridAccumulator
from bindexp.interventions.results.metrics import AnswerTokens
from bindexp.models.forward import SharedPrefix, common_prefix_length, encode
from bindexp.models.loading import LoadedModel
from bindexp.models.positions import role_positions
from bindexp.models.scoring import candidate_token_ids
from bindexp.models.sites import SITES
from bindexp.tasks.counterfactuals import CounterfactualPair
from bindexp.tasks.program import Program
from bindexp.tasks.prompts import build_prompt, program_offset
from bindexp.tasks.registry import get_task


@dataclasses.dataclass
class TokenizedPair:
    pair: CounterfactualPair
    ids: list[int]
    cf_ids: list[int]
    roles: dict[str, int]  # role -> token position (same in both prompts)
    program_start: int  # token position where the program begins (after the few-shot examples)
    answer: AnswerTokens
    tokens: list[str]  # token texts of the clean prompt
    offsets: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # each token's characters in the prompt
    program_char: int = 0  # character offset where the program begins in the prompt

    @property
    def first_diff(self) -> int:
        return next(i for i, (a, b) in enumerate(zip(self.ids, self.cf_ids)) if a != b)


ColumnMap = Callable[[TokenizedPair], dict[str, int]]


def pair_prompts(pair: CounterfactualPair, shots: Sequence[Program], template: str) -> tuple[str, str]:
    return build_prompt(pair.original, shots, template), build_prompt(pair.counterfactual, shots, template)


def pairs_task(pairs: Sequence[CounterfactualPair]):
    """The one task all pairs come from (its `TaskSpec`)."""
    tasks = sorted({pair.original.task for pair in pairs})
    if len(tasks) > 1:
        raise ModelError(f"pairs of one grid must come from one task, got {', '.join(tasks)}")
    return get_task(tasks[0])


def tokenize_pairs(
    lm: LoadedModel, pairs: Sequence[CounterfactualPair], shots: Sequence[Program] = (), template: str = "raw",
    candidates: Sequence[str] | None = None,
) -> tuple[list[TokenizedPair], list[str]]:
    """Tokenize both sides of each pair; pairs whose sides do not align token by token are
    dropped, with the reason returned alongside. candidates: the answers a pair is scored among
    (default: the task's pair candidates)."""
    if candidates is None and pairs:
        candidates = pairs_task(pairs).pair_candidates
    tokenized, dropped = [], []
    candidate_ids: list[int] | None = None
    for pair in pairs:
        prompt, cf_prompt = pair_prompts(pair, shots, template)
        clean, cf = encode(lm.tokenizer, [prompt, cf_prompt])
        lm.check_lengths([len(clean.ids), len(cf.ids)])
        if len(clean.ids) != len(cf.ids) or clean.offsets != cf.offsets:
            dropped.append(f"tokens of the two sides do not align: {pair.original.text!r}")
            continue
        if candidate_ids is None:
            candidate_ids = candidate_token_ids(lm.tokenizer, prompt, candidates)
        start = program_offset(prompt, pair.original)
        roles = role_positions(pair.original, clean.offsets, start)
        answer = AnswerTokens(
            original=candidate_ids[list(candidates).index(str(pair.original.answer))],
            counterfactual=candidate_ids[list(candidates).index(str(pair.counterfactual.answer))],
            candidates=tuple(candidate_ids),
        )
        program_token = next(i for i, (a, b) in enumerate(clean.offsets) if b > start)
        tokens = [prompt[a:b] for a, b in clean.offsets]
        tokenized.append(TokenizedPair(pair, clean.ids, cf.ids, roles, program_token, answer, tokens,
                                       list(clean.offsets), start))
    return tokenized, dropped


def shared_prefix_length(tokenized: Sequence[TokenizedPair]) -> int:
    """Tokens every prompt of the chunk shares, stopping before the first counterfactual edit."""
    if not tokenized:
        return 0
    common = common_prefix_length([t.ids for t in tokenized] + [t.cf_ids for t in tokenized])
    return min([common] + [t.first_diff for t in tokenized])


def grid_columns(tokenized: Sequence[TokenizedPair], mode: str) -> tuple[str, list, ColumnMap]:
    """The column axis: the task's token roles in reading order, or every program token."""
    if mode == "roles":
        labels = pairs_task([t.pair for t in tokenized]).role_columns([t.pair.original for t in tokenized])
        return "role", labels, lambda t: {c: t.roles[c] for c in labels if c in t.roles}
    if mode == "positions":
        check_one_shape(tokenized)
        found = {label for t in tokenized for label in position_labels(t)}
        return "position", sorted(found, key=_position_order), position_labels
    raise ModelError(f"columns must be 'roles' or 'positions', got {mode!r}")


def position_labels(t: TokenizedPair) -> dict[str, int]:
    """Every program token by where it ends in the program text: `L<line>:<column>` of its last
    character (so a spaced constant's ' ' and '5' tokens and a copy's ' b' token land in the
    columns of the characters they end on, in every pair), `final` for the prompt's last token,
    `final-<k>` for tokens after the program text (a template's suffix)."""
    text = t.pair.original.text
    line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]
    last = len(t.ids) - 1
    labels = {"final": last}
    for index in range(t.program_start, last):
        end = t.offsets[index][1] - 1 - t.program_char
        if end >= len(text):
            labels[f"final-{last - index}"] = index
        else:
            line = bisect.bisect_right(line_starts, end) - 1
            labels[f"L{line}:{end - line_starts[line]}"] = index
    return labels


def _position_order(label: str) -> tuple:
    if label.startswith("L"):
        line, column = label[1:].split(":")
        return (0, int(line), int(column))
    return (1, -int(label.split("-")[1]) if "-" in label else 0)


def check_one_shape(tokenized: Sequence[TokenizedPair]) -> None:
    """Position columns align pairs by character: their programs must have the same line lengths."""
    shapes = {tuple(len(line) for line in t.pair.original.text.split("\n")) for t in tokenized}
    if len(shapes) > 1:
        raise ModelError("positions=all needs programs of one shape (the same line lengths), so that a column is "
                         f"the same character in every pair; these pairs have {len(shapes)} shapes: "
                         "use positions=roles")


@dataclasses.dataclass
class GridPlan:
    """What every grid method needs before its first forward: tokens, axes, the shared prefix."""

    lm: LoadedModel
    site: str
    tokenized: list[TokenizedPair]
    dropped: list[str]
    axis: str  # "role" or "position"
    labels: list
    column_map: ColumnMap
    layers: list[int]
    heads: list[int] | None
    start: int  # shared prefix length
    prefix: SharedPrefix | None

    def head_info(self) -> dict[str, Any]:
        """What a grid of k or v says about its heads: key/value head -> the query heads it serves."""
        if self.site not in ("k", "v"):
            return {}
        return {"kv_head_serves": {str(g): self.lm.sites.serves(g) for g in self.heads or []}}

    def accumulator(self, metrics: Sequence[str]) -> GridAccumulator:
        axes = ("layer", self.axis) + (("head",) if self.heads else ())
        labels = {"layer": self.layers, self.axis: self.labels, **({"head": self.heads} if self.heads else {})}
        accumulator = GridAccumulator(axes, labels, metrics)
        first = self.column_map(self.tokenized[0])
        accumulator.token_labels = [self.tokenized[0].tokens[first[c]] if c in first else "" for c in self.labels]
        return accumulator


def plan_grid(lm: LoadedModel, pairs: Sequence[CounterfactualPair], *, site: str = "resid_pre",
              shots: Sequence[Program] = (), template: str = "raw", columns: str = "roles",
              layers: Sequence[int] | None = None, prefix_until: str = "edit") -> GridPlan:
    """Check the request, tokenize the pairs, and compute the shared prefix's cache once.

    prefix_until: "edit" shares every token before the first counterfactual edit (methods that
    write the counterfactual's values: nothing before the edit can change); "columns" stops the
    prefix before the first column's token too (methods that write elsewhere, e.g. zeros).
    """
    if site not in SITES:
        raise ModelError(f"unknown site {site!r}; known sites: {', '.join(SITES)}")
    sites = lm.sites
    sites.check(site)
    layers = list(range(sites.n_layers)) if layers is None else list(layers)
    if not layers or min(layers) < 0 or max(layers) >= sites.n_layers:
        raise ModelError(f"layers must lie in 0..{sites.n_layers - 1}, got {layers}")
    tokenized, dropped = tokenize_pairs(lm, pairs, shots, template)
    if not tokenized:
        raise ModelError("no pair is left to patch" + (f" ({dropped[0]})" if dropped else ""))
    axis, labels, column_map = grid_columns(tokenized, columns)
    start = shared_prefix_length(tokenized)
    if prefix_until == "columns":
        start = min([start] + [min(column_map(t).values(), default=start) for t in tokenized])
    elif prefix_until != "edit":
        raise ModelError(f"prefix_until must be 'edit' or 'columns', got {prefix_until!r}")
    prefix = SharedPrefix(lm.model, tokenized[0].ids[:start]) if start else None
    heads = sites.heads(site)
    return GridPlan(lm, site, tokenized, dropped, axis, labels, column_map, layers, heads, start, prefix)
