"""Zero ablation writes zeros: at layer 0's resid_pre it equals a plain forward whose embedding
output is zeroed at that token."""

import numpy as np
import torch

from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.methods import METHODS, MethodOptions
from bindexp.tasks.counterfactuals import make_pairs


def _ld_with_zeroed_embedding(lm, ids, position, original, counterfactual):
    def zero(module, args, output):
        output = output.clone()
        output[0, position] = 0.0
        return output

    handle = lm.model.model.embed_tokens.register_forward_hook(zero)
    try:
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    finally:
        handle.remove()
    return float(logits[counterfactual] - logits[original])


def test_zero_ablating_resid_pre_at_layer_0_equals_a_zeroed_embedding(tiny_llama):
    (pair,) = make_pairs("root_value", 1, 4, 0, hops=2)
    plan = plan_grid(tiny_llama, [pair], site="resid_pre", columns="positions", layers=[0, 2],
                     prefix_until=METHODS["zero_ablation"].prefix_until)
    grid = METHODS["zero_ablation"].load()(plan, MethodOptions(cells_per_forward=5)).grid
    tok = tiny_llama.tokenizer
    ids = tok(pair.original.text)["input_ids"]
    original, counterfactual = (tok.convert_tokens_to_ids(str(a)) for a in pair.answers)
    width = len(grid.labels["position"])
    expected = [_ld_with_zeroed_embedding(tiny_llama, ids, len(ids) - width + c, original, counterfactual)
                for c in range(width)]
    np.testing.assert_allclose(grid.mean["logit_diff"][0], expected, atol=2e-5)
    assert np.isfinite(grid.mean["logit_diff"][1]).all()  # layer 2: every token run, before the edit too
    assert len(set(np.round(expected, 4))) > 1  # zeroing different tokens changes the answer differently
