"""Patching speed: the old three-forwards-per-cell loop, one forward per cell, and bindexp's grid.

    python scripts/bench_patch.py --model=smollm2-135m --pairs=2 --shots=3 --layer_step=5

All three compute the same cells (resid_pre, layers x roles) on the same pairs; the script checks
their logit differences agree and prints the speed ratios (targets: >= 10x the old loop, >= 3x one
forward per cell), then times attribution patching in forward-equivalents (target <= 3) and prints how well it finds
the exact grid's cells (precision/recall@k, sign agreement, full-grid Spearman).
"""

from __future__ import annotations

import torch

from bindexp.interventions.engine.plan import tokenize_pairs
from bindexp.interventions.methods.atp import agreement, attribution_grid
from bindexp.interventions.methods.exact import patch_grid
from bindexp.models.bench import count, load_bench_model, model_parser, non_negative, run_bench, timed
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs


def parse_args(argv):
    parser = model_parser(__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=count, default=2)
    parser.add_argument("--hops", type=int, default=1)
    parser.add_argument("--seq_len", type=count, default=16)
    parser.add_argument("--shots", type=non_negative, default=3)
    parser.add_argument("--layer_step", type=count, default=5, help="every k-th layer (the loops are slow)")
    parser.add_argument("--cells_per_forward", type=count, default=32)
    parser.add_argument("--top_k", type=count, default=10, help="k of AtP's precision/recall@k against the exact grid")
    return parser.parse_args(argv)


def _forward(model, ids, hook=None, layer=None):
    handle = model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True) if hook else None
    try:
        with torch.inference_mode():
            return model(input_ids=ids).logits[0, -1].float()
    finally:
        if handle:
            handle.remove()


def _capture(model, ids, layer):
    box = {}

    def grab(module, args, kwargs):
        box["h"] = (args[0] if args else kwargs["hidden_states"]).clone()

    _forward(model, ids, grab, layer)
    return box["h"]


def _patch_hook(position, value):
    def hook(module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        hidden[0, position] = value
        if args:
            return (hidden,) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": hidden}
    return hook


def old_loop(model, tokenized, cells):
    """Per cell: a clean forward, a counterfactual forward for the activation, a patched forward."""
    out = {}
    for pair, layer, role in cells:
        item = tokenized[pair]
        ids, cf_ids = (torch.tensor([x], device=model.device) for x in (item.ids, item.cf_ids))
        _forward(model, ids)
        value = _capture(model, cf_ids, layer)[0, item.roles[role]]
        logits = _forward(model, ids, _patch_hook(item.roles[role], value), layer)
        out[(pair, layer, role)] = float(logits[item.answer.counterfactual] - logits[item.answer.original])
    return out


def one_forward_per_cell(model, tokenized, cells, layers):
    """Counterfactual activations once per pair, then one full patched forward per cell."""
    cache = {}
    for pair, item in enumerate(tokenized):
        cf_ids = torch.tensor([item.cf_ids], device=model.device)
        for layer in layers:
            cache[(pair, layer)] = _capture(model, cf_ids, layer)[0]
    out = {}
    for pair, layer, role in cells:
        item = tokenized[pair]
        value = cache[(pair, layer)][item.roles[role]]
        logits = _forward(model, torch.tensor([item.ids], device=model.device), _patch_hook(item.roles[role], value), layer)
        out[(pair, layer, role)] = float(logits[item.answer.counterfactual] - logits[item.answer.original])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: _bench(args))


def _bench(args) -> int:
    lm = load_bench_model(args)
    shots = make_programs("binding", args.shots, args.seq_len, args.seed, stream="shots", hops=args.hops)
    pairs = make_pairs("root_value", args.pairs, args.seq_len, args.seed, hops=args.hops,
                       exclude={s.text for s in shots})
    tokenized, _ = tokenize_pairs(lm, pairs, shots)
    layers = list(range(0, lm.n_layers, args.layer_step))
    roles = ["chain1_lhs", "root_value", "distractor1_value", "query_var", "final"]
    cells = [(p, layer, role) for p in range(len(tokenized)) for layer in layers for role in roles
             if role in tokenized[p].roles]
    _forward(lm.model, torch.tensor([tokenized[0].ids], device=lm.device))  # warm-up

    grid, t_grid = timed(lambda: patch_grid(lm, pairs, site="resid_pre", shots=shots, layers=layers,
                                            cells_per_forward=args.cells_per_forward, pairs_per_chunk=len(pairs)))
    one, t_one = timed(lambda: one_forward_per_cell(lm.model, tokenized, cells, layers))
    old, t_old = timed(lambda: old_loop(lm.model, tokenized, cells))
    _, t_forward = timed(lambda: [_forward(lm.model, torch.tensor([t.ids], device=lm.device)) for t in tokenized])
    atp, t_atp = timed(lambda: attribution_grid(lm, pairs, site="resid_pre", shots=shots))

    # the grid's per-cell LD is averaged over pairs: compare averages per (layer, role)
    worst = 0.0
    for layer_index, layer in enumerate(layers):
        for role in roles:
            values = [old[(p, layer, role)] for p in range(len(tokenized)) if (p, layer, role) in old]
            ones = [one[(p, layer, role)] for p in range(len(tokenized)) if (p, layer, role) in one]
            mean_old, mean_one = sum(values) / len(values), sum(ones) / len(ones)
            mean_grid = float(grid.mean["logit_diff"][layer_index, grid.labels["role"].index(role)])
            worst = max(worst, abs(mean_old - mean_grid), abs(mean_one - mean_grid))
    tokens = len(tokenized[0].ids)
    print(f"model {args.model} on {lm.device} ({lm.dtype}), {len(tokenized)} pairs of ~{tokens} tokens "
          f"({args.shots}-shot), {len(cells)} cells ({len(layers)} layers x {len(roles)} roles), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<34}{'seconds':>9}{'cells/s':>10}")
    for name, seconds in (("old loop (3 forwards per cell)", t_old), ("one forward per cell", t_one),
                          ("bindexp patch_grid", t_grid)):
        print(f"{name:<34}{seconds:>9.2f}{len(cells) / seconds:>10.1f}")
    print(f"largest |LD difference| between methods: {worst:.2e}")
    print(f"speed-up vs old loop:             {t_old / t_grid:.1f}x (target >= 10x)")
    print(f"speed-up vs one forward per cell: {t_one / t_grid:.1f}x (target >= 3x)")
    print(f"AtP full grid ({lm.n_layers} layers x roles): {t_atp:.2f}s = "
          f"{t_atp / t_forward:.2f} forward-equivalents per pair (target <= 3)")
    columns = [atp.labels["role"].index(r) for r in grid.labels["role"]]
    atp_cells = atp.mean["normalized_effect"][layers][:, columns]
    numbers = agreement(atp_cells, grid.mean["normalized_effect"], k=min(args.top_k, atp_cells.size))
    print(f"AtP vs exact over these {atp_cells.size} cells (|normalized effect|, top k={numbers['k']}): "
          f"precision@k {numbers['precision_at_k']:.2f}, recall@k {numbers['recall_at_k']:.2f}, "
          f"sign agreement on the exact top k {numbers['sign_agreement_exact_top_k']:.2f}, "
          f"full-grid Spearman {numbers['spearman_full']:.3f}")
    return 0 if worst < 1e-2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
