"""One vocabulary of intervention sites, mapped once per architecture family.

Sites (per layer):
- resid_pre: the residual stream entering the layer (the decoder layer's input).
- resid_post: the residual stream leaving the layer (its output; = resid_pre of the next layer).
- attn_out: the attention block's output, before it is added to the residual stream.
- mlp_out: the MLP block's output, before it is added to the residual stream.
- head: one attention head's output: its slice of the output projection's input, sized by the
  number of *query* heads (so grouped-query attention is handled).
- q, k, v: one head's query, key or value: its slice of the query / key / value projection's output
  (before rotary and any per-head norm), per query head for q and per key/value head for k and v
  (on grouped-query models key/value head g serves query heads g*r .. g*r+r-1, r = heads per
  key/value head: `SiteMap.serves`). Families whose projections are fused (gpt2's c_attn, phi3's
  qkv_proj) do not have these sites.
- conv_out: on models with a causal convolution before attention (`bindexp.models.conv_llama`),
  what the convolution adds to the attention block's normalised input.

Adding an architecture family is one entry in FAMILIES (its layers, parts and final norm). The
graph forward of edge-level methods (`bindexp.interventions.engine.graph_forward`) runs only on the
families whose entry says `graph=True`: Llama-like decoders whose layer is exactly
x + attn(norm(x)) then x + mlp(norm(x)), with rotary queries and keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bindexp.errors import ModelError
from bindexp.vocab import HEAD_SITES, SITES


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Where a family keeps its decoder layers and their parts (attribute paths)."""

    layers: str  # from the top model to the list of decoder layers
    attn: str  # from a layer to its attention block
    mlp: str  # from a layer to its MLP block
    attn_proj: str  # from a layer to the attention output projection (input = concatenated heads)
    final_norm: str  # from the top model to the norm before the unembedding
    conv: str | None = None  # from a layer to its convolution (None: the family has none)
    # from a layer to the query / key / value projections (None: fused, no q, k, v sites)
    q_proj: str | None = "self_attn.q_proj"
    k_proj: str | None = "self_attn.k_proj"
    v_proj: str | None = "self_attn.v_proj"
    # the graph forward (edge-level methods): whether it runs on this family, and the parts it reads
    graph: bool = False
    embed: str = "model.embed_tokens"  # from the top model to the token embedding
    unembed: str = "lm_head"  # from the top model to the unembedding
    attn_norm: str = "input_layernorm"  # from a layer to the norm before attention
    mlp_norm: str = "post_attention_layernorm"  # from a layer to the norm before the MLP
    q_norm: str = "self_attn.q_norm"  # from a layer to a per-head query norm (absent: none)
    k_norm: str = "self_attn.k_norm"  # from a layer to a per-head key norm (absent: none)


_LLAMA_LIKE = Architecture(layers="model.layers", attn="self_attn", mlp="mlp", attn_proj="self_attn.o_proj",
                           final_norm="model.norm")
_GRAPH = dataclasses.replace(_LLAMA_LIKE, graph=True)
FAMILIES: dict[str, Architecture] = {
    "llama": _GRAPH,
    "bindexp_conv_llama": dataclasses.replace(_GRAPH, conv="conv"),
    "mistral": _LLAMA_LIKE,
    "qwen2": _GRAPH,
    "qwen3": _GRAPH,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": dataclasses.replace(_LLAMA_LIKE, q_proj=None, k_proj=None, v_proj=None),
    "gpt2": Architecture(layers="transformer.h", attn="attn", mlp="mlp", attn_proj="attn.c_proj",
                         final_norm="transformer.ln_f", q_proj=None, k_proj=None, v_proj=None,
                         embed="transformer.wte", attn_norm="ln_1", mlp_norm="ln_2"),
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
    n_kv_heads: int = 0  # 0: as many as query heads

    @classmethod
    def of(cls, model: Any, family: str) -> SiteMap:
        architecture(family)
        config = model.config.get_text_config()
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        has_conv = architecture(family).conv is not None and bool(getattr(config, "conv_kernel", 0))
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        return cls(family, config.num_hidden_layers, n_heads, head_dim, has_conv, n_kv)

    @property
    def available(self) -> tuple[str, ...]:
        """The sites this model has (conv_out only where it has a convolution, q, k, v only where
        the projections are separate modules)."""
        return tuple(s for s in SITES if (s != "conv_out" or self.has_conv)
                     and (s not in ("q", "k", "v") or self.arch.q_proj is not None))

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
        if site in ("q", "k", "v"):
            self.check(site)
            return walk(layer, getattr(self.arch, f"{site}_proj"))
        raise ModelError(f"unknown site {site!r}; known sites: {', '.join(SITES)}")

    @staticmethod
    def reads_input(site: str) -> bool:
        return site in ("resid_pre", "head")

    def final_norm(self, root: Any) -> Any:
        return walk(root, self.arch.final_norm)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def heads(self, site: str) -> list[int] | None:
        """A per-head site's heads (query heads; key/value heads for k and v); None for the others."""
        if site not in HEAD_SITES:
            return None
        return list(range(self.kv_heads if site in ("k", "v") else self.n_heads))

    def serves(self, kv_head: int) -> list[int]:
        """The query heads that read key/value head `kv_head` (all of them share it)."""
        group = self.n_heads // self.kv_heads
        return list(range(kv_head * group, (kv_head + 1) * group))

    def kv_head_of(self, head: int) -> int:
        """The key/value head query head `head` reads."""
        return head // (self.n_heads // self.kv_heads)

    def head_slice(self, head: int) -> slice:
        """Head `head`'s features in a per-head site (every head has head_dim of them)."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    def head_columns(self, heads: int | tuple[int, ...]) -> list[int]:
        """The features of one head or several, in order."""
        return [c for head in ((heads,) if isinstance(heads, int) else heads)
                for c in range(self.head_slice(head).start, self.head_slice(head).stop)]
