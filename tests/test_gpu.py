"""CUDA paths: device and dtype defaults, batched scoring in bf16, 4-bit loading. Needs a GPU."""

import importlib.util

import pytest
import torch

from bindexp.models import load_model, score_candidates
from bindexp.tasks import build_prompt, make_programs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
DIGITS = tuple(str(d) for d in range(10))


def _prompts(n=12):
    shots = make_programs("binding", 2, 8, 0, stream="shots")
    programs = make_programs("binding", n, 8, 0, exclude={s.text for s in shots})
    return [build_prompt(p, shots) for p in programs], [p.answer for p in programs]


def test_auto_device_is_cuda_in_bf16():
    lm = load_model("tiny-random-llama")
    assert lm.device.type == "cuda" and lm.dtype == torch.bfloat16


def test_cuda_scores_match_cpu_scores():
    prompts, answers = _prompts()
    gpu = score_candidates(load_model("tiny-random-llama", dtype="float32"), prompts, answers, DIGITS, batch_size=5)
    cpu = score_candidates(load_model("tiny-random-llama", device="cpu"), prompts, answers, DIGITS, batch_size=5)
    for a, b in zip(gpu, cpu):
        assert a.prediction == b.prediction
        assert a.p_answer == pytest.approx(b.p_answer, rel=1e-3, abs=1e-6)


def test_bf16_batched_equals_one_at_a_time():
    lm = load_model("tiny-random-qwen3")
    prompts, answers = _prompts()
    together = score_candidates(lm, prompts, answers, DIGITS, batch_size=12)
    for prompt, answer, score in zip(prompts, answers, together):
        assert score_candidates(lm, [prompt], [answer], DIGITS)[0].prediction == score.prediction


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_loading_scores(tmp_path, bits):
    source = load_model("tiny-random-llama", device="cpu")
    source.model.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), quantization=bits)
    prompts, answers = _prompts(4)
    scores = score_candidates(lm, prompts, answers, DIGITS)
    assert len(scores) == 4 and all(0 <= s.p_answer <= 1 for s in scores)


def test_patch_grid_on_cuda_matches_cpu():
    import numpy as np

    from bindexp.interventions.methods.exact import patch_grid
    from bindexp.tasks.counterfactuals import make_pairs

    pairs = make_pairs("root_value", 3, 6, 0, hops=2)
    gpu = patch_grid(load_model("tiny-random-llama", dtype="float32"), pairs, site="head", cells_per_forward=128)
    cpu = patch_grid(load_model("tiny-random-llama", device="cpu"), pairs, site="head")
    np.testing.assert_allclose(gpu.mean["logit_diff"], cpu.mean["logit_diff"], atol=1e-4)


def test_attribution_and_knockout_run_in_bf16():
    import numpy as np

    from bindexp.interventions.methods.atp import attribution_grid
    from bindexp.interventions.methods.knockout import knockout_grid
    from bindexp.tasks.counterfactuals import make_pairs

    lm = load_model("tiny-random-qwen3")
    pairs = make_pairs("root_value", 2, 6, 0, hops=2)
    atp = attribution_grid(lm, pairs, site="resid_pre")
    knock = knockout_grid(lm, pairs, sources=["root_value", "query_var"])
    assert atp.n.max() == 2 and knock.n.max() == 2
    assert np.isfinite(atp.mean["logit_diff"]).all() and np.isfinite(knock.mean["p_drop"]).all()
