"""What the analyses cost, in forward-equivalents (one forward of one prompt after the shared prefix):
attention extraction per program, the logit lens per program, DAS training, and the edge-level
methods per pair (path patching, EAP, EAP-IG, exact path patching of every edge).

    python scripts/bench_analyses.py --model=smollm2-135m --programs=8 --shots=3 --hops=2 --seq_len=6 \
        --das_steps=20 --das_batch_size=8 --k=16
    python scripts/bench_analyses.py --model=smollm2-135m --programs=4 --parts=edges --ig_steps=5

A forward-equivalent is the measured time of one plain forward of one clean prompt after the shared
few-shot prefix (averaged over the programs). DAS: seconds per optimizer step (a forward with the
interchange hook and a backward into the rotation, `das_batch_size` pairs) and the whole training of
one k (`steps` of them, plus the counterfactual activations and held-out scoring), in
forward-equivalents; a sweep over ks costs len(ks) times that.

Edge-level methods, per pair, measured and counted (a backward ~2 forwards; a path-patching cell
from layer l ~(N - l)/N of a forward; cells into the logits cost nothing): EAP = clean forward +
backward + counterfactual forward = 4; EAP-IG with K steps = 2 + 3K; path patching into one receiver
set = its preparation (4: the clean/counterfactual runs of the engine and of the graph) + its cells;
exact path patching of every edge = 4 + the sum over edges of (N - l)/N, timed on the edges into
one receiver at `--edge_layer` and extrapolated by that fraction.
"""

from __future__ import annotations

import dataclasses

import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.graph_forward import GraphParts
from bindexp.interventions.engine.plan import plan_grid, shared_prefix_length, tokenize_pairs
from bindexp.interventions.methods.das import DasSettings, das
from bindexp.interventions.methods.edge_attribution import edge_attribution
from bindexp.interventions.methods.path_patching import path_patch, set_senders
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
    parser.add_argument("--parts", default="attention,lens,das,edges", help="what to measure, comma-separated")
    parser.add_argument("--ig_steps", type=int, default=5, help="EAP-IG steps")
    parser.add_argument("--edge_layer", type=int, default=None, help="path patching / exact edges into this "
                        "layer's head 0 (default: the middle layer)")
    return parser.parse_args(argv)


def bench_das(args, lm, tokenized, prefix, per_forward: float) -> None:
    site = site_pairs(tokenized, "root_value")
    train, heldout = site[args.programs:], site[: args.programs]
    layer = lm.n_layers // 2 if args.layer is None else args.layer
    settings = DasSettings(steps=args.das_steps, batch_size=args.das_batch_size, seed=args.seed)
    _, t_das = timed(lambda: das(lm, layer, train, heldout, [args.k], settings, prefix=prefix))
    _, t_das_zero = timed(lambda: das(lm, layer, train, heldout, [args.k], DasSettings(steps=0, seed=args.seed),
                                      prefix=prefix))
    per_step = (t_das - t_das_zero) / max(args.das_steps, 1)
    print(f"DAS step ({args.das_batch_size} pairs, forward + backward): {per_step * 1000:.1f} ms = "
          f"{per_step / per_forward:.1f} forward-equivalents ({per_step / per_forward / args.das_batch_size:.2f} per pair)")
    print(f"DAS for one k ({args.das_steps} steps, {len(train)} training / {len(heldout)} held-out pairs): "
          f"{t_das:.2f}s = {t_das / per_forward:.0f} forward-equivalents; "
          f"at 200 steps ~{(t_das_zero + 200 * per_step) / per_forward:.0f}")


def bench_edges(args, lm, pairs, shots, per_forward: float) -> None:
    """Path patching, EAP, EAP-IG and exact path patching of every edge, per pair (module doc)."""
    plan = plan_grid(lm, pairs, shots=shots)
    plan = dataclasses.replace(plan, tokenized=plan.tokenized[: args.programs])
    graph = GraphParts.of(lm).graph
    n = len(plan.tokenized)
    layer = lm.n_layers // 2 if args.edge_layer is None else args.edge_layer
    spec = f"q:{layer}.0"

    def report(what: str, seconds: float, counted: float) -> None:
        print(f"{what}, per pair: {seconds / n:.2f} s = {seconds / n / per_forward:.1f} forward-equivalents "
              f"measured, {counted:.1f} counted")

    _, t_eap = timed(lambda: edge_attribution(plan))
    report(f"EAP, all {len(graph.edges)} edges", t_eap, 4)
    _, t_ig = timed(lambda: edge_attribution(plan, ig_steps=args.ig_steps))
    report(f"EAP-IG ({args.ig_steps} steps), all edges", t_ig, 2 + 3 * args.ig_steps)
    receiver = graph.receiver_set(spec)
    senders = len(set_senders(GraphParts.of(lm), receiver))
    fraction = (graph.n_layers - layer) / graph.n_layers
    _, t_set = timed(lambda: path_patch(plan, [spec], cells_per_forward=32))
    report(f"path patching into {spec} ({senders} senders)", t_set, 4 + senders * fraction)
    _, t_logits = timed(lambda: path_patch(plan, ["logits"]))
    report(f"path patching into the logits ({len(graph.nodes)} senders)", t_logits, 4)
    per_cell = (t_set / n - 4 * per_forward) / senders / fraction  # one full-depth cell, from this set's cells
    weights = sum((graph.n_layers - graph.receivers[r].layer) / graph.n_layers for _, r in graph.edges
                  if graph.receivers[r].kind != "logits")
    print(f"exact path patching of every edge ({len(graph.edges)} edges), per pair: ~{4 + weights * per_cell / per_forward:.0f}"
          f" forward-equivalents extrapolated from the cells into {spec}, {4 + weights:.0f} counted")


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
    parts = set(args.parts.split(","))
    print(f"model {args.model} on {lm.device} ({lm.dtype}), {len(programs)} programs of ~{len(sequences[0])} tokens "
          f"({args.shots}-shot, {start} shared), torch threads {torch.get_num_threads()}")
    print(f"one forward (one prompt after the prefix): {per_forward * 1000:.1f} ms = 1 forward-equivalent")
    if "attention" in parts:
        _, t_attention = timed(lambda: role_attention(lm, sequences, roles, ["final", "query_var"], columns,
                                                      prefix=prefix))
        print(f"attention weights, 2 destinations, per program: {t_attention / len(programs) * 1000:.1f} ms = "
              f"{t_attention / len(programs) / per_forward:.2f} forward-equivalents (eager attention)")
    if "lens" in parts:
        _, t_lens = timed(lambda: role_lens(lm, sequences, roles, [(t.answer.original, t.answer.counterfactual)
                                                                   for t in programs], columns, prefix=prefix))
        print(f"logit lens, {len(columns)} roles, per program: {t_lens / len(programs) * 1000:.1f} ms = "
              f"{t_lens / len(programs) / per_forward:.2f} forward-equivalents")
    if "das" in parts:
        bench_das(args, lm, tokenized, prefix, per_forward)
    if "edges" in parts:
        bench_edges(args, lm, pairs[: 2 * args.programs], shots, per_forward)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
