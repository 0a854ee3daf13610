"""One vocabulary of intervention sites, mapped once per architecture family.

Sites (per layer):
- resid_pre: the residual stream entering the layer (the decoder layer's input).
- resid_post: the residual stream leaving the layer (its output; = resid_pre of the next layer).
- attn_out: the attention block's output, before it is added to the residual stream.
- mlp_out: the MLP block's output, before it is added to the residual stream.
- head: one attention head's output: its slice of the output projection's input, sized by the
  number of *query* heads (so grouped-query attention is handled).
- conv_out: on models with a causal convolution before attention (`bindexp.models.conv_llama`),
  what the convolution adds to the attention block's normalised input.

Adding an architecture family is one entry in FAMILIES (its layers, parts and final norm).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bindexp.errors import ModelError
from bindexp.vocab import SITES


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Where a family keeps its decoder layers and their parts (attribute paths)."""

    layers: str  # from the top model to the list of decoder layers
    attn: str  # from a layer to its attention block
    mlp: str  # from a layer to its MLP block
    attn_proj: str  # from a layer to the attention output projection (input = concatenated heads)
    final_norm: str  # from the top model to the norm before the unembedding
    conv: str | None = None  # from a layer to its convolution (None: the family has none)


_LLAMA_LIKE = Architecture(layers="model.layers", attn="self_attn", mlp="mlp", attn_proj="self_attn.o_proj",
                           final_norm="model.norm")
FAMILIES: dict[str, Architecture] = {
    "llama": _LLAMA_LIKE,
    "bindexp_conv_llama": dataclasses.replace(_LLAMA_LIKE, conv="conv"),
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "gpt2": Architecture(layers="transformer.h", attn="attn", mlp="mlp", attn_proj="attn.c_proj",
                         final_norm="transformer.ln_f"),
}


def architecture(family: str) -> Architecture:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ModelError(
            f"no intervention sites are mapped for model family {family!r}; add it to bindexp.models.sites.FAMILIES"
        ) from None


def walk(root: Any, path: str) -> Any:
    """The attribute at dotted `path` below `root`."""
    for name in path.split("."):
        root = getattr(root, name)
    return root


@dataclasses.dataclass(frozen=True)
class SiteMap:
    """Resolves site names to modules of a model (plain torch or an nnsight wrapper alike)."""

    family: str
    n_layers: int
    n_heads: int
    head_dim: int
    has_conv: bool = False

    @classmethod
    def of(cls, model: Any, family: str) -> SiteMap:
        architecture(family)
        config = model.config.get_text_config()
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        has_conv = architecture(family).conv is not None and bool(getattr(config, "conv_kernel", 0))
        return cls(family, config.num_hidden_layers, n_heads, head_dim, has_conv)

    @property
    def available(self) -> tuple[str, ...]:
        """The sites this model has (conv_out only where it has a convolution)."""
        return tuple(s for s in SITES if s != "conv_out" or self.has_conv)

    def check(self, site: str) -> None:
        """ModelError unless this model has `site`."""
        if site not in self.available:
            raise ModelError(f"site {site!r} does not exist in this {self.family} model; its sites: "
                             f"{', '.join(self.available)}")

    @property
    def arch(self) -> Architecture:
        return architecture(self.family)

    def layer(self, root: Any, index: int) -> Any:
        return walk(root, self.arch.layers)[index]

    def module(self, root: Any, site: str, index: int) -> Any:
        """The module whose input (resid_pre, head) or output (the rest) holds `site`."""
        layer = self.layer(root, index)
        if site in ("resid_pre", "resid_post"):
            return layer
        if site == "attn_out":
            return walk(layer, self.arch.attn)
        if site == "mlp_out":
            return walk(layer, self.arch.mlp)
        if site == "head":
            return walk(layer, self.arch.attn_proj)
        if site == "conv_out":
            self.check(site)
            return walk(layer, self.arch.conv)
        raise ModelError(f"unknown site {site!r}; known sites: {', '.join(SITES)}")

    @staticmethod
    def reads_input(site: str) -> bool:
        return site in ("resid_pre", "head")

    def final_norm(self, root: Any) -> Any:
        return walk(root, self.arch.final_norm)

    def head_slice(self, head: int) -> slice:
        return slice(head * self.head_dim, (head + 1) * self.head_dim)
