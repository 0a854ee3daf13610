"""Path patching: the exact engine's cells equal the graph forward with the sender's delta added to
the receivers alone and a plain torch hook reference; a sender with no path gives 0; a sender into
the logits is its direct effect by hand; batched equals one at a time."""

import pytest
import torch

from bindexp.interventions.engine.graph_forward import EdgeMix, GraphParts, PrefixState, graph_forward
from bindexp.interventions.engine.graph_runs import pair_runs, token_embeds
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.engine.prepared import prepare_pairs
from bindexp.interventions.methods.path_patching import edge_logits, exact_edges, path_patch, set_senders
from bindexp.interventions.results.metrics import logit_diff
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs

SPECS = ["q:2.1", "k:2.3", "v:1.0+1.2", "mlp:1", "logits"]


def _setup(lm, shots=2, n=2):
    shot_programs = make_programs("binding", shots, 6, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", n, 6, 0, hops=2, exclude={s.text for s in shot_programs})
    plan = plan_grid(lm, pairs, shots=shot_programs)
    parts = GraphParts.of(lm)
    prefix = PrefixState.of(plan.prefix, parts.graph.n_layers)
    prepared = prepare_pairs(lm, "resid_pre", plan.tokenized, plan.prefix)
    return plan, parts, prefix, prepared, [pair_runs(parts, t, prefix) for t in plan.tokenized]


def _mixed(parts, run, prefix, rows):
    """The graph forward of the clean prompt where row b's receivers `rows[b][1]` read sender
    `rows[b][0]`'s counterfactual output instead of its clean one (coef -1 on those edges)."""
    graph = parts.graph
    coef = torch.zeros(len(rows), len(graph.nodes), len(graph.receivers))
    for b, (sender, receivers) in enumerate(rows):
        coef[b, sender, list(receivers)] = -1
    embeds = token_embeds(parts, run.tokens.ids, run.start).expand(len(rows), -1, -1)
    with torch.no_grad():
        return graph_forward(parts, embeds, prefix=prefix, mix=EdgeMix(run.cf, coef)).logits


@pytest.mark.parametrize("spec", SPECS)
def test_engine_cells_equal_the_graph_forward_reference(amplified, spec):
    plan, parts, prefix, prepared, runs = _setup(amplified)
    receiver_set = parts.graph.receiver_set(spec)
    senders = set_senders(parts, receiver_set)
    got = edge_logits(parts, prepared, runs, receiver_set, [senders] * len(runs), prefix, cells_per_forward=7)
    for run, logits in zip(runs, got):
        expected = _mixed(parts, run, prefix, [(s, receiver_set.receivers) for s in senders])
        torch.testing.assert_close(logits, expected, atol=5e-6, rtol=0)
        moved = (logits - run.clean.logits).abs().amax(dim=-1)
        assert moved.max() > 5e-4  # patching moves the output 100 times the tolerance


def _hook_reference(lm, item, sender, layer, heads, kind):
    """Plain torch, full prompts, no prefix: delta of a head sender by hooks on its o_proj input;
    the receivers' q/k/v recomputed from clean residual + delta in a hook on the projection."""
    model = lm.model
    hd = model.config.head_dim if getattr(model.config, "head_dim", None) else 16
    s_layer, s_head = sender
    captured = {}

    def grab(tag):
        def hook(module, args):
            captured[(tag, "z")] = args[0][0].detach()
        return hook

    def resid(tag):
        def hook(module, args, kwargs):
            captured[(tag, "x")] = (args[0] if args else kwargs["hidden_states"])[0].detach()
        return hook

    out = {}
    for tag, ids in (("clean", item.ids), ("cf", item.cf_ids)):
        handles = [model.model.layers[s_layer].self_attn.o_proj.register_forward_pre_hook(grab(tag)),
                   model.model.layers[layer].register_forward_pre_hook(resid(tag), with_kwargs=True)]
        with torch.no_grad():
            out[tag] = model(input_ids=torch.tensor([ids])).logits[0, -1]
        for handle in handles:
            handle.remove()
    w_o = model.model.layers[s_layer].self_attn.o_proj.weight[:, s_head * hd : (s_head + 1) * hd]
    delta = (captured[("cf", "z")] - captured[("clean", "z")])[:, s_head * hd : (s_head + 1) * hd] @ w_o.T
    block = model.model.layers[layer]
    projection = getattr(block.self_attn, f"{kind}_proj")
    with torch.no_grad():
        new = projection(block.input_layernorm(captured[("clean", "x")] + delta))
    columns = [c for h in heads for c in range(h * hd, (h + 1) * hd)]

    def write(module, args, output):
        output = output.clone()
        output[0, :, columns] = new[:, columns]
        return output

    handle = projection.register_forward_hook(write)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([item.ids])).logits[0, -1]
    handle.remove()
    return logits


@pytest.mark.parametrize("spec", ["q:2.1", "v:3.0+3.3"])
def test_engine_cells_equal_a_plain_hook_reference(amplified_llama, spec):
    plan, parts, prefix, prepared, runs = _setup(amplified_llama)
    graph = parts.graph
    receiver_set = graph.receiver_set(spec)
    heads = graph.set_heads(receiver_set)
    senders = [graph.node_index[name] for name in ("0.2", "1.3")]
    got = edge_logits(parts, prepared, runs, receiver_set, [senders] * len(runs), prefix)
    for run, logits in zip(runs, got):
        for row, name in enumerate(("0.2", "1.3")):
            sender = tuple(int(x) for x in name.split("."))
            expected = _hook_reference(amplified_llama, run.tokens, sender, receiver_set.layer, heads, receiver_set.kind)
            torch.testing.assert_close(logits[row], expected, atol=2e-5, rtol=0)


def test_a_sender_without_a_path_gives_exactly_zero(amplified_llama):
    """A sender after the receivers' stage cannot reach them: asked to, the graph forward leaves the
    clean run bit for bit; a grid lists only the senders before its receivers; and a sender whose
    output does not change (a head with no output weights) is exactly 0 in the grid."""
    plan, parts, prefix, prepared, runs = _setup(amplified_llama)
    graph = parts.graph
    late = [(graph.node_index["2.0"], graph.receiver_set("q:1.1").receivers),
            (graph.node_index["mlp 1"], graph.receiver_set("v:1.2").receivers),
            (graph.node_index["1.3"], graph.receiver_set("k:1.0").receivers)]
    clean = _mixed(parts, runs[0], prefix, [(0, ())] * len(late))
    assert torch.equal(_mixed(parts, runs[0], prefix, late), clean)
    grids = path_patch(plan, ["q:1.1", "mlp:1"])
    assert grids["q:1.1"].labels["sender"] == ["embed", "0.0", "0.1", "0.2", "0.3", "mlp 0"]
    assert grids["mlp:1"].labels["sender"][-4:] == ["1.0", "1.1", "1.2", "1.3"]

    lm = amplified_llama
    saved = lm.model.model.layers[0].self_attn.o_proj.weight[:, 16:32].clone()
    try:
        with torch.no_grad():
            lm.model.model.layers[0].self_attn.o_proj.weight[:, 16:32] = 0  # head 0.1 writes nothing
        grid = path_patch(plan_grid(lm, make_pairs("root_value", 2, 6, 0, hops=2)), ["logits", "q:2.0"])
    finally:
        with torch.no_grad():
            lm.model.model.layers[0].self_attn.o_proj.weight[:, 16:32] = saved
    for spec in ("logits", "q:2.0"):
        values = grid[spec].mean["normalized_effect"]
        assert values[grid[spec].labels["sender"].index("0.1")] == 0.0
        assert abs(values[grid[spec].labels["sender"].index("0.0")]) > 1e-3


def _capture(model, ids, layer):
    """Layer `layer`'s o_proj input and the final norm's input at the last position, and the logits."""
    box = {}
    handles = [model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(
                   lambda m, a: box.__setitem__("z", a[0][0, -1].detach())),
               model.model.norm.register_forward_pre_hook(lambda m, a: box.__setitem__("final", a[0][0, -1].detach()))]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    for handle in handles:
        handle.remove()
    return box["z"], box["final"], logits


def test_a_sender_into_the_logits_is_its_direct_effect_by_hand(amplified_llama):
    """Head 2.1's delta at the final token through the final norm and the unembedding with the
    clean final residual, everything read by plain hooks on the model."""
    model = amplified_llama.model
    plan = plan_grid(amplified_llama, make_pairs("root_value", 3, 6, 1, hops=2))
    grid = path_patch(plan, ["logits"], cells_per_forward=4)["logits"]
    effects = []
    for item in plan.tokenized:
        z_clean, final, clean = _capture(model, item.ids, 2)
        z_cf, _, cf = _capture(model, item.cf_ids, 2)
        delta = model.model.layers[2].self_attn.o_proj.weight[:, 16:32] @ (z_cf - z_clean)[16:32]
        with torch.no_grad():
            patched = model.lm_head(model.model.norm(final + delta))
        ld_clean, ld_cf = logit_diff(clean, item.answer), logit_diff(cf, item.answer)
        effects.append(float((logit_diff(patched, item.answer) - ld_clean) / (ld_cf - ld_clean)))
    got = grid.mean["normalized_effect"][grid.labels["sender"].index("2.1")]
    assert got == pytest.approx(sum(effects) / len(effects), abs=1e-5)
    assert abs(got) > 1e-2


def test_batched_cells_equal_one_at_a_time(amplified_llama):
    plan, parts, prefix, prepared, runs = _setup(amplified_llama)
    receiver_set = parts.graph.receiver_set("k:3.0+3.2")
    senders = set_senders(parts, receiver_set)
    together = edge_logits(parts, prepared, runs, receiver_set, [senders] * len(runs), prefix, cells_per_forward=64)
    alone = edge_logits(parts, prepared, runs, receiver_set, [senders] * len(runs), prefix, cells_per_forward=1)
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)


def test_one_edge_grids_match_the_receiver_set_grids(amplified_llama):
    """exact_edges (EAP's check) and path_patch agree on edges into a one-receiver set."""
    plan, parts, *_ = _setup(amplified_llama)
    graph = parts.graph
    receiver = graph.receiver_index["2.kv1 v"]
    edges = [(s, receiver) for s in range(len(graph.nodes)) if graph.feeds(s, receiver)]
    by_edge = exact_edges(plan, edges, cells_per_forward=5)
    by_set = path_patch(plan, ["v:2.2"])["v:2.2"]
    torch.testing.assert_close(torch.tensor(by_edge.mean["ld_shift"]), torch.tensor(by_set.mean["ld_shift"]),
                               atol=5e-6, rtol=0)
    assert abs(by_set.mean["ld_shift"]).max() > 5e-3
