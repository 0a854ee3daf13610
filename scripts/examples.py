"""Print example programs of every registered task, and how deep binding distractor chains run.

    python scripts/examples.py --seed 0 --seq_len 8 --n 2
"""

from __future__ import annotations

import argparse
import collections

from bindexp.errors import TaskError
from bindexp.tasks import MAX_HOPS, make_programs, task_names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq_len", type=int, default=8, help="length of the example programs")
    parser.add_argument("--n", type=int, default=2, help="examples per task (and per hop count)")
    parser.add_argument("--depth_n", type=int, default=2000, help="binding programs for the depth table")
    parser.add_argument("--depth_seq_len", type=int, default=16, help="their seq_len")
    return parser.parse_args(argv)


def show(title: str, task: str, n: int, seq_len: int, seed: int, **options) -> None:
    print(f"=== {title} ===")
    try:
        programs = make_programs(task, n, seq_len, seed, **options)
    except TaskError as err:
        print(f"(cannot draw: {err})\n")
        return
    for program in programs:
        print(program.text + program.answer_text)
        facts = f"answer: {program.answer_text}"
        if task == "binding":
            meta = program.meta
            facts += (
                f"  hops: {meta['hops']}  chain lines: {meta['chain_lines']} (0-based)"
                f"  heuristic: {meta['heuristic']} (line1={meta['line1_value']}, line2={meta['line2_value']})"
            )
        print(facts + "\n")


def depth_table(n: int, seq_len: int, seed: int) -> None:
    print(f"=== distractor depths over {n} binding programs (seq_len={seq_len}, default options) ===")
    try:
        programs = make_programs("binding", n, seq_len, seed)
    except TaskError as err:
        print(f"(cannot draw: {err})")
        return
    counts = collections.Counter(d for p in programs for d in p.meta["distractor_depths"])
    total = sum(counts.values())
    print(f"{'depth':>5}  {'count':>7}  {'share':>6}")
    for depth in sorted(counts):
        print(f"{depth:>5}  {counts[depth]:>7}  {counts[depth] / total:>6.1%}")
    print(f"{'all':>5}  {total:>7}  {1:>6.1%}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for task in task_names():
        if task == "binding":
            for hops in range(1, MAX_HOPS + 1):
                show(f"binding, hops={hops}", task, args.n, args.seq_len, args.seed, hops=hops)
        else:
            show(task, task, args.n, args.seq_len, args.seed)
    depth_table(args.depth_n, args.depth_seq_len, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
