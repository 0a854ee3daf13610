"""Evaluation throughput: bindexp's scorer vs a bare batched HF forward vs generate-then-parse.

    python scripts/bench_eval.py --model=smollm2-135m --num_programs=64 --shots=3

All three score the same prompts; the script checks that their predictions agree and prints
programs/s and the ratios (targets: >= 0.9x the bare forward, >= 3x generate-then-parse).
"""

from __future__ import annotations

import argparse

import torch

from bindexp.models import score_candidates, score_generate
from bindexp.models.bench import count, load_bench_model, model_parser, non_negative, run_bench, timed
from bindexp.models.scoring import candidate_token_ids
from bindexp.tasks import build_prompt, make_programs
from bindexp.vocab import DIGITS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = model_parser(__doc__.splitlines()[0])
    parser.add_argument("--num_programs", type=count, default=64)
    parser.add_argument("--seq_len", type=count, default=16)
    parser.add_argument("--hops", type=int, default=2)
    parser.add_argument("--shots", type=non_negative, default=3)
    parser.add_argument("--batch_size", type=count, default=16)
    parser.add_argument("--max_new_tokens", type=count, default=3)
    parser.add_argument("--repeats", type=count, default=1, help="timed runs per method; the fastest counts")
    return parser.parse_args(argv)


def bare_forward(lm, prompts: list[str], batch_size: int) -> list[torch.Tensor]:
    """What one writes by hand: pad the batch, run the model, take the last real position."""
    tokenizer, outputs = lm.tokenizer, []
    for at in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[at : at + batch_size], return_tensors="pt", padding=True).to(lm.device)
        with torch.inference_mode():
            logits = lm.model(**enc).logits
        last = enc["attention_mask"].sum(1) - 1
        outputs.extend(logits[torch.arange(len(last)), last].float().cpu())
    return outputs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: _bench(args))


def _bench(args) -> int:
    lm = load_bench_model(args)
    shots = make_programs("binding", args.shots, args.seq_len, args.seed, stream="shots", hops=args.hops)
    programs = make_programs("binding", args.num_programs, args.seq_len, args.seed,
                             exclude={s.text for s in shots}, hops=args.hops)
    prompts = [build_prompt(p, shots) for p in programs]
    answers = [p.answer for p in programs]
    tokenizer = lm.tokenizer
    if tokenizer.padding_side != "right":
        tokenizer.padding_side = "right"  # the bare forward takes the last real position
    n, r = len(prompts), args.repeats
    ours, t_ours = timed(lambda: score_candidates(lm, prompts, answers, DIGITS, batch_size=args.batch_size),
                         r, gpu_warmup=True)
    _, t_no_reuse = timed(lambda: score_candidates(lm, prompts, answers, DIGITS, batch_size=args.batch_size,
                                                   reuse_prefix=False), r, gpu_warmup=True)
    bare, t_bare = timed(lambda: bare_forward(lm, prompts, args.batch_size), r, gpu_warmup=True)
    gen, t_gen = timed(lambda: score_generate(lm, prompts, answers, int, max_new_tokens=args.max_new_tokens,
                                              batch_size=args.batch_size), r, gpu_warmup=True)
    ids = candidate_token_ids(tokenizer, prompts[0], DIGITS)
    bare_predictions = [DIGITS[int(logits[ids].argmax())] for logits in bare]
    agree_bare = sum(a.prediction == b for a, b in zip(ours, bare_predictions)) / n
    agree_gen = sum(a.prediction == b.prediction for a, b in zip(ours, gen)) / n
    tokens = len(tokenizer(prompts[0])["input_ids"])
    print(f"model {args.model} on {lm.device} ({lm.dtype}), {n} prompts of ~{tokens} tokens, "
          f"{args.shots}-shot, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"{'method':<28}{'seconds':>9}{'programs/s':>12}")
    for name, seconds in (("bindexp score_candidates", t_ours), ("  same, prefix not reused", t_no_reuse),
                          ("bare batched HF forward", t_bare),
                          (f"generate({args.max_new_tokens}) + parse", t_gen)):
        print(f"{name:<28}{seconds:>9.2f}{n / seconds:>12.2f}")
    print(f"predictions agree: bindexp vs bare forward {agree_bare:.0%}, vs generate {agree_gen:.0%}")
    print(f"ratio vs bare forward:      {t_bare / t_ours:.2f}x (target >= 0.9x)")
    print(f"ratio vs generate + parse:  {t_gen / t_ours:.2f}x (target >= 3x)")
    return 0 if agree_bare == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
