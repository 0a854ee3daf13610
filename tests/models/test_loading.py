"""Model loading: bundled names, local dirs, errors as one line."""

import pytest
import torch

from bindexp.models import ModelCache, ModelError, load_model
from bindexp.models.loading import check_model_name


def _logits(lm, text="a = 3\n#a: "):
    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits


def test_tiny_models_are_deterministic_in_their_seed():
    a = load_model("tiny-random-llama", seed=1)
    b = load_model("tiny-random-llama", seed=1)
    c = load_model("tiny-random-llama", seed=2)
    assert torch.equal(_logits(a), _logits(b))
    assert not torch.equal(_logits(a), _logits(c))
    assert a.revision == "random-init-seed1" and a.family == "llama"
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_tiny_qwen3_has_grouped_query_attention(tiny_qwen3):
    config = tiny_qwen3.model.config
    assert tiny_qwen3.family == "qwen3"
    assert config.num_key_value_heads < config.num_attention_heads


def test_local_directory_round_trip(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), device="cpu")
    assert torch.equal(_logits(again), _logits(tiny_llama))
    assert again.revision.startswith("local:")
    assert again.tokenizer("a = 3")["input_ids"] == tiny_llama.tokenizer("a = 3")["input_ids"]


@pytest.mark.parametrize("name", ["nonsense", "tiny-random-gpt9", "./no/such/dir"])
def test_unknown_models_fail_with_one_line(name):
    with pytest.raises(ModelError) as err:
        load_model(name)
    assert "\n" not in str(err.value) and name.split("/")[-1] in str(err.value)


def test_unreachable_hub_id_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("bindexp-test/does-not-exist", device="cpu")
    assert "\n" not in str(err.value)


def test_quantization_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match="CUDA"):
        load_model("tiny-random-llama", quantization="4bit")
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_model("tiny-random-llama", device="cuda")


def test_bad_dtype_is_rejected():
    with pytest.raises(ModelError, match="dtype"):
        load_model("tiny-random-llama", dtype="float8")


def test_check_model_name_accepts_hub_ids_and_paths(tmp_path):
    check_model_name("Qwen/Qwen3-0.6B")
    (tmp_path / "config.json").write_text("{}")  # a local model directory needs at least a config
    check_model_name(str(tmp_path))
    check_model_name("smollm2-135m")


def test_model_cache_reuses_and_unloads():
    cache = ModelCache()
    first = cache.get("tiny-random-llama", seed=0)
    assert cache.get("tiny-random-llama", seed=0) is first
    cache.preload(["tiny-random-qwen3"], seed=0)
    assert sorted(cache.loaded()) == ["tiny-random-llama", "tiny-random-qwen3"]
    assert cache.unload("tiny-random-llama") == 1
    assert cache.loaded() == ["tiny-random-qwen3"]
    assert cache.get("tiny-random-llama", seed=0) is not first
    cache.clear()
    assert cache.loaded() == []


def test_trust_remote_code_is_off_by_default():
    import inspect

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
