"""The graph forward: a Llama-like model's forward written over the nodes and receivers of
`bindexp.interventions.engine.graph`, so that every receiver can get its own input.

    parts = GraphParts.of(lm)                       # refuses families the forward does not cover
    run = graph_forward(parts, parts.embed(ids), prefix=PrefixState.of(shared_prefix))
    run.logits                                      # the model's final-position logits (clean forward)
    run.outputs[graph.node_index["8.1"]]            # head 8.1's contribution [B, T, d]
    run.points[k]                                   # the run's residual at receiver stage k

It is written with the model's own modules and weights: the norms, the convolution of
`bindexp_conv_llama` (after the attention norm, before q/k/v), the query/key/value projections
sliced per head, qwen3's per-head q_norm/k_norm, the model's rotary embedding, the output
projection sliced per head, the MLP, the final norm and the unembedding. With every receiver reading
the plain residual it computes the model's logits (to float rounding; tests check 1e-5).

What a receiver reads is the `mix`'s choice (`EdgeMix`): the run's residual plus, per edge, a
multiple of (sender's output in this run - its output in a reference run). `taps=True` adds a zero
leaf to every receiver input, so that one backward gives the gradient of a metric with respect to
each receiver's own input (edge attribution).

Runs continue a shared few-shot prefix: its keys and values (and the convolution's history) come
from the prefix cache, the same in every run (nothing before the first counterfactual edit can
differ), and only the positions after it are computed. Rows of a batch have the same length.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any

import torch

from bindexp.errors import ModelError
from bindexp.interventions.engine.graph import Graph
from bindexp.models.forward import SharedPrefix
from bindexp.models.loading import LoadedModel
from bindexp.models.sites import FAMILIES, walk

GRAPH_FAMILIES = tuple(name for name, arch in FAMILIES.items() if arch.graph)


@dataclasses.dataclass
class LayerParts:
    """One decoder layer's modules and its projection weights sliced per head."""

    attn_norm: Any
    conv: Any  # bindexp_conv_llama's CausalDepthwiseConv, or None
    q_norm: Any
    k_norm: Any
    weight: dict[str, torch.Tensor]  # q, k, v -> [heads, head_dim, d]
    bias: dict[str, torch.Tensor | None]  # q, k, v -> [heads, head_dim] or None
    out: torch.Tensor  # [heads, d, head_dim]: the output projection's columns of each head
    out_bias: torch.Tensor | None  # [d]: a constant, outside the graph
    scaling: float
    mlp_norm: Any
    mlp: Any


@dataclasses.dataclass
class PrefixState:
    """The shared prefix's keys and values per layer ([1, kv heads, P, head_dim], after rotary) and
    the convolution's inputs ([1, P, d] per layer, None without a convolution)."""

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    conv: list[torch.Tensor | None]

    @classmethod
    def of(cls, prefix: SharedPrefix | None, n_layers: int) -> PrefixState | None:
        if prefix is None or not prefix.length:
            return None
        layers = prefix.layers
        conv = [layers[n_layers + i][0][:, 0] if len(layers) > n_layers else None for i in range(n_layers)]
        return cls(prefix.length, [k for k, _ in layers[:n_layers]], [v for _, v in layers[:n_layers]], conv)


class GraphParts:
    """The modules the graph forward runs, read once from a loaded model (sharing its weights)."""

    def __init__(self, lm: LoadedModel):
        arch = FAMILIES.get(lm.family)
        if arch is None or not arch.graph:
            raise ModelError(f"the graph forward (path patching, edge attribution, circuits) covers the families "
                             f"{', '.join(GRAPH_FAMILIES)}, not {lm.family!r}")
        config = lm.model.config.get_text_config()
        if getattr(config, "use_sliding_window", False) or "sliding_attention" in (getattr(config, "layer_types", None)
                                                                                   or []):
            raise ModelError("the graph forward computes full causal attention; this model uses a sliding window")
        sites = lm.sites
        self.lm, self.arch, self.sites = lm, arch, sites
        self.graph = Graph(sites.n_layers, sites.n_heads, sites.kv_heads)
        self.head_dim = sites.head_dim
        model = lm.model
        self.embedding = walk(model, arch.embed)
        self.final_norm = walk(model, arch.final_norm)
        self.unembed = walk(model, arch.unembed)
        self.rotary = walk(model, arch.layers.rsplit(".", 1)[0] + ".rotary_emb")
        attn = walk(sites.layer(model, 0), arch.attn)
        self.apply_rotary = importlib.import_module(type(attn).__module__).apply_rotary_pos_emb
        self.layers = [self._layer(sites.layer(model, i)) for i in range(sites.n_layers)]

    @classmethod
    def of(cls, lm: LoadedModel) -> GraphParts:
        return cls(lm)

    def _layer(self, layer: Any) -> LayerParts:
        arch, hd = self.arch, self.head_dim
        weight, bias = {}, {}
        for kind in ("q", "k", "v"):
            projection = walk(layer, getattr(arch, f"{kind}_proj"))
            weight[kind] = projection.weight.view(-1, hd, projection.weight.shape[-1])
            bias[kind] = None if projection.bias is None else projection.bias.view(-1, hd)
        out = walk(layer, arch.attn_proj)
        d = out.weight.shape[0]
        return LayerParts(
            attn_norm=walk(layer, arch.attn_norm), conv=_optional(layer, arch.conv), q_norm=_optional(layer, arch.q_norm),
            k_norm=_optional(layer, arch.k_norm), weight=weight, bias=bias,
            out=out.weight.view(d, -1, hd).permute(1, 0, 2), out_bias=out.bias,
            scaling=walk(layer, arch.attn).scaling, mlp_norm=walk(layer, arch.mlp_norm), mlp=walk(layer, arch.mlp))

    # ---------------------------------------------------------------- the pieces a forward runs

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def project(self, layer: int, kind: str, inputs: torch.Tensor, heads: Sequence[int] | None = None,
                prefix: PrefixState | None = None) -> torch.Tensor:
        """Each head's query, key or value ([B, n, T, head_dim]; the q/k/v sites' values, before
        any per-head norm and rotary) from its own input residual `inputs` [n, B, T, d] (`heads`:
        which heads, default all; key/value heads for k and v)."""
        parts = self.layers[layer]
        normed = parts.attn_norm(inputs)
        if parts.conv is not None:
            n, batch, length, d = normed.shape
            flat = normed.reshape(n * batch, length, d)
            history = prefix.conv[layer] if prefix is not None else None
            if history is not None:
                tail = history[:, -(parts.conv.kernel - 1):] if parts.conv.kernel > 1 else history[:, :0]
                flat = torch.cat([tail.expand(n * batch, -1, -1), flat], dim=1)
            normed = normed + parts.conv(flat)[:, -length:].reshape(n, batch, length, d)
        weight, bias = parts.weight[kind], parts.bias[kind]
        if heads is not None:
            weight = weight[list(heads)]
            bias = None if bias is None else bias[list(heads)]
        values = torch.einsum("nbtd,ned->bnte", normed, weight)
        return values if bias is None else values + bias[None, :, None, :]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, position_embeddings,
               prefix: PrefixState | None) -> torch.Tensor:
        """Each query head's attention result [B, H, T, head_dim] from queries [B, H, T, hd] and
        keys/values [B, G, T, hd] (the sites' values), after the prefix's keys and values."""
        parts = self.layers[layer]
        if parts.q_norm is not None:
            q = parts.q_norm(q)
        if parts.k_norm is not None:
            k = parts.k_norm(k)
        q, k = self.apply_rotary(q, k, *position_embeddings)
        batch, length = q.shape[0], q.shape[2]
        if prefix is not None:
            k = torch.cat([prefix.keys[layer].expand(batch, -1, -1, -1), k], dim=2)
            v = torch.cat([prefix.values[layer].expand(batch, -1, -1, -1), v], dim=2)
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * parts.scaling
        start = k.shape[2] - length
        future = torch.arange(k.shape[2], device=q.device)[None, :] > start + torch.arange(length, device=q.device)[:, None]
        scores = scores.masked_fill(future, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(weights, v)

    def head_outputs(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's contribution to the residual [H, B, T, d] from its attention result [B, H, T, hd]."""
        return torch.einsum("bhte,hde->hbtd", z, self.layers[layer].out)

    def mlp_out(self, layer: int, inputs: torch.Tensor) -> torch.Tensor:
        parts = self.layers[layer]
        return parts.mlp(parts.mlp_norm(inputs))

    def logits(self, final: torch.Tensor) -> torch.Tensor:
        """Logits from final residuals [..., d]."""
        return self.unembed(self.final_norm(final))


def _optional(layer: Any, path: str | None) -> Any:
    if path is None:
        return None
    try:
        return walk(layer, path)
    except AttributeError:
        return None


@dataclasses.dataclass
class GraphRun:
    """What a graph forward computed: every node's output, the run's residual at each receiver
    stage, the final-position logits, and (taps=True) the zero leaves added to receiver inputs."""

    outputs: torch.Tensor  # [nodes, B, T, d]
    points: list[torch.Tensor]  # per receiver stage (Graph.stages order): [B, T, d]
    logits: torch.Tensor  # [B, vocab] at the final position
    taps: list[torch.Tensor] | None = None  # per receiver stage: [receivers there, B, T, d]

    def tap_gradients(self, graph: Graph) -> torch.Tensor:
        """After a backward: d metric / d (each receiver's input), [receivers, B, T, d]."""
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in self.taps or []]
        order = [r for _, receivers in graph.stages() for r in receivers]
        stacked = torch.cat(grads)
        out = torch.empty_like(stacked)
        out[order] = stacked
        return out


@dataclasses.dataclass
class EdgeMix:
    """Receiver r of row b reads base + sum over senders s of coef[b, s, r] * (out_s - reference_s):
    base "run" is this run's residual, "reference" the reference run's residual at that stage.

    coef = -1 on (s, r): r reads the reference's output of s instead of this run's (path patching,
    when this run is clean and the reference the counterfactual). Faithfulness of a circuit: base
    "run" with coef = kept - 1, or (the same, cheaper for small circuits) base "reference" with
    coef = kept, where kept[b, s, r] = 1 for the circuit's edges."""

    reference: GraphRun
    coef: torch.Tensor  # [B, nodes, receivers]
    base: str = "run"

    def inputs(self, stage: int, receivers: list[int], x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        coef = self.coef[:, : len(outputs)][:, :, receivers]
        base = x if self.base == "run" else self.reference.points[stage].expand_as(x)
        active = torch.nonzero(coef.abs().sum(dim=(0, 2))).flatten().tolist()
        if not active:
            return base.unsqueeze(0).expand(len(receivers), *base.shape)
        diff = torch.stack([outputs[s] for s in active]) - self.reference.outputs[active]
        return base.unsqueeze(0) + torch.einsum("bar,abtd->rbtd", coef[:, active].to(diff.dtype), diff)


def graph_forward(parts: GraphParts, embeds: torch.Tensor, *, prefix: PrefixState | None = None,
                  mix: EdgeMix | None = None, taps: bool = False) -> GraphRun:
    """Run the graph over token embeddings [B, T, d] (the positions after `prefix`)."""
    graph = parts.graph
    batch, length, _ = embeds.shape
    start = prefix.length if prefix is not None else 0
    positions = torch.arange(start, start + length, device=embeds.device).expand(batch, -1)
    position_embeddings = parts.rotary(embeds, positions)
    outputs: list[torch.Tensor] = [embeds]
    points: list[torch.Tensor] = []
    leaves: list[torch.Tensor] = []
    x = embeds
    stages = graph.stages()
    n_heads, n_kv = graph.n_heads, graph.n_kv_heads

    def inputs_at(index: int) -> torch.Tensor:
        receivers = stages[index][1]
        points.append(x)
        if mix is None:
            read = x.unsqueeze(0).expand(len(receivers), *x.shape)
        else:
            read = mix.inputs(index, receivers, x, outputs)
        if taps:
            leaf = torch.zeros(read.shape, dtype=read.dtype, device=read.device, requires_grad=True)
            leaves.append(leaf)
            read = read + leaf
        return read

    for layer in range(graph.n_layers):
        read = inputs_at(2 * layer)  # q of each query head, k then v of each key/value head
        q = parts.project(layer, "q", read[:n_heads], prefix=prefix)
        k = parts.project(layer, "k", read[n_heads : n_heads + n_kv], prefix=prefix)
        v = parts.project(layer, "v", read[n_heads + n_kv :], prefix=prefix)
        heads = parts.head_outputs(layer, parts.attend(layer, q, k, v, position_embeddings, prefix))
        outputs += list(heads.unbind(0))
        x = x + heads.sum(0)
        if parts.layers[layer].out_bias is not None:
            x = x + parts.layers[layer].out_bias
        mlp = parts.mlp_out(layer, inputs_at(2 * layer + 1)[0])
        outputs.append(mlp)
        x = x + mlp
    final = inputs_at(2 * graph.n_layers)[0]
    return GraphRun(torch.stack(outputs), points, parts.logits(final[:, -1]), leaves if taps else None)
