"""What the analyses cost, in forward-equivalents (one forward of one prompt after the shared prefix):
attention extraction per program, the logit lens per program, and DAS training.

    python scripts/bench_analyses.py --model=smollm2-135m --programs=8 --shots=3 --hops=2 --seq_len=6 \
        --das_steps=20 --das_batch_size=8 --k=16

A forward-equivalent is the measured time of one plain forward of one clean prompt after the shared
few-shot prefix (averaged over the programs). DAS: seconds per optimizer step (a forward with the
interchange hook and a backward into the rotation, `das_batch_size` pairs) and the whole training of
one k (`steps` of them, plus the counterfactual activations and held-out scoring), in
forward-equivalents; a sweep over ks costs len(ks) times that.
"""

from __future__ import annotations

import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.plan import shared_prefix_length, tokenize_pairs
from bindexp.interventions.methods.das import DasSettings, das
from bindexp.interventions.methods.subspace import site_pairs
from bindexp.interventions.readouts.attention import role_attention
from bindexp.interventions.readouts.lens import role_lens
from bindexp.models.bench import count, load_bench_model, model_parser, non_negative, run_bench, timed
from bindexp.models.forward import SharedPrefix, batch_forward, batches, pad_id_of
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


def parse_args(argv):
    parser = model_parser(__doc__.splitlines()[0])
    parser.add_argument("--programs", type=count, default=8)
    parser.add_argument("--hops", type=int, default=2)
    parser.add_argument("--seq_len", type=count, default=6)
    parser.add_argument("--shots", type=non_negative, default=3)
    parser.add_argument("--das_steps", type=count, default=20)
    parser.add_argument("--das_batch_size", type=count, default=8)
    parser.add_argument("--k", type=count, default=16)
    parser.add_argument("--layer", type=int, default=None, help="DAS layer (default: the middle layer)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: _bench(args))


def _bench(args) -> int:
    lm = load_bench_model(args)
    if args.layer is not None and not 0 <= args.layer < lm.n_layers:
        raise ModelError(f"--layer={args.layer}: the model's layers are 0..{lm.n_layers - 1}")
    shots = make_programs("binding", args.shots, args.seq_len, args.seed, stream="shots", hops=args.hops)
    pairs = make_pairs("root_value", 2 * args.programs, args.seq_len, args.seed, hops=args.hops,
                       exclude={s.text for s in shots})
    tokenized, _ = tokenize_pairs(lm, pairs, shots)
    start = shared_prefix_length(tokenized)
    prefix = SharedPrefix(lm.model, tokenized[0].ids[:start]) if start else None
    programs = tokenized[: args.programs]
    sequences, roles = [t.ids for t in programs], [t.roles for t in programs]
    columns = ["root_value", "query_var", "final"]

    def forwards():
        for batch in batches(sequences, start, 1, pad_id_of(lm.tokenizer), lm.device):
            with torch.no_grad():
                batch_forward(lm.model, batch, prefix)

    forwards()  # warm-up
    _, t_forward = timed(forwards)
    per_forward = t_forward / len(programs)
    _, t_attention = timed(lambda: role_attention(lm, sequences, roles, ["final", "query_var"], columns, prefix=prefix))
    _, t_lens = timed(lambda: role_lens(lm, sequences, roles, [(t.answer.original, t.answer.counterfactual)
                                                               for t in programs], columns, prefix=prefix))
    site = site_pairs(tokenized, "root_value")
    train, heldout = site[args.programs:], site[: args.programs]
    layer = lm.n_layers // 2 if args.layer is None else args.layer
    settings = DasSettings(steps=args.das_steps, batch_size=args.das_batch_size, seed=args.seed)
    _, t_das = timed(lambda: das(lm, layer, train, heldout, [args.k], settings, prefix=prefix))
    _, t_das_zero = timed(lambda: das(lm, layer, train, heldout, [args.k], DasSettings(steps=0, seed=args.seed),
                                      prefix=prefix))
    per_step = (t_das - t_das_zero) / max(args.das_steps, 1)
    print(f"model {args.model} on {lm.device} ({lm.dtype}), {len(programs)} programs of ~{len(sequences[0])} tokens "
          f"({args.shots}-shot, {start} shared), torch threads {torch.get_num_threads()}")
    print(f"one forward (one prompt after the prefix): {per_forward * 1000:.1f} ms = 1 forward-equivalent")
    print(f"attention weights, 2 destinations, per program: {t_attention / len(programs) * 1000:.1f} ms = "
          f"{t_attention / len(programs) / per_forward:.2f} forward-equivalents (eager attention)")
    print(f"logit lens, {len(columns)} roles, per program: {t_lens / len(programs) * 1000:.1f} ms = "
          f"{t_lens / len(programs) / per_forward:.2f} forward-equivalents")
    print(f"DAS step ({args.das_batch_size} pairs, forward + backward): {per_step * 1000:.1f} ms = "
          f"{per_step / per_forward:.1f} forward-equivalents ({per_step / per_forward / args.das_batch_size:.2f} per pair)")
    print(f"DAS for one k ({args.das_steps} steps, {len(train)} training / {len(heldout)} held-out pairs): "
          f"{t_das:.2f}s = {t_das / per_forward:.0f} forward-equivalents; "
          f"at 200 steps ~{(t_das_zero + 200 * per_step) / per_forward:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
