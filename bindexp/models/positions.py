"""Token roles -> token positions, from character spans and the tokenizer's offsets.

Never by matching token strings: a BOS token shifts every index, and tokenizers merge a space
into the following letter (` k`) or a `#` into a name (`#a`). A role's position is the token
that contains the first character of its span.
"""

from __future__ import annotations

from collections.abc import Sequence

from bindexp.errors import ModelError
from bindexp.tasks.program import Program


def token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the token whose character range contains `char` (special tokens skipped)."""
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index
    raise ModelError(f"no token covers character {char}")


def role_positions(program: Program, offsets: Sequence[tuple[int, int]], program_start: int) -> dict[str, int]:
    """Token index of every role of `program`, which starts at `program_start` in the prompt."""
    positions = {role: token_at(offsets, program_start + start) for role, (start, _) in program.spans.items()}
    positions["final"] = len(offsets) - 1
    return positions
