"""The computation graph of the edge-level methods (path patching, edge attribution, circuits).

Nodes (senders), each writing into the residual stream:
- `embed`: the token embeddings;
- `L.H`: attention head H of layer L, its contribution alone (the output projection applied to its
  slice; an output-projection bias is a constant outside the graph);
- `mlp L`: the MLP of layer L.

Receivers, each reading the (pre-norm) residual stream:
- `L.H q`: the input of query head H's query;
- `L.G k`, `L.G v`: the inputs of key/value head G's key and value; on grouped-query models they
  are named `L.kvG k` / `L.kvG v` and serve query heads `serves` (`bindexp.models.sites.SiteMap.serves`);
- `mlp L`: the MLP's input; `logits`: the final residual.

A receiver's input is the sum of the outputs of every sender before it (plus constants). Order is
by stage: embed 0; the heads of layer L 2L+1; mlp L 2L+2; the logits 2N+1. A sender feeds a
receiver of a later stage: q, k, v of layer L read stage 2L+1 (senders of stages <= 2L), the MLP of
layer L stage 2L+2, the logits stage 2N+1. An edge is (sender, receiver) with the sender before it.

Receiver sets (what path patching writes into) are named by a spec: `q:8.1` (one head),
`v:23.0+23.3` (several heads of one layer), `k:23.4` (the key/value head query head 23.4 reads),
`mlp:5`, `logits`.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from bindexp.errors import InputError

EMBED = "embed"
LOGITS = "logits"
HEAD_KINDS = ("q", "k", "v")
SPEC = re.compile(r"^(?:(?P<kind>[qkv]):(?P<heads>\d+\.\d+(?:\+\d+\.\d+)*)|mlp:(?P<mlp>\d+)|(?P<logits>logits))$")


@dataclasses.dataclass(frozen=True)
class Node:
    """A sender: kind "embed", "head" or "mlp"; layer -1 for the embeddings."""

    name: str
    kind: str
    layer: int
    head: int | None = None

    @property
    def stage(self) -> int:
        return {"embed": 0, "head": 2 * self.layer + 1, "mlp": 2 * self.layer + 2}[self.kind]


@dataclasses.dataclass(frozen=True)
class Receiver:
    """kind q, k, v (head: the query head for q, the key/value head for k and v), mlp or logits."""

    name: str
    kind: str
    layer: int
    head: int | None = None
    serves: tuple[int, ...] = ()  # the query heads reading it (q: itself)

    def stage(self, n_layers: int) -> int:
        if self.kind == "logits":
            return 2 * n_layers + 1
        return 2 * self.layer + (2 if self.kind == "mlp" else 1)


@dataclasses.dataclass(frozen=True)
class ReceiverSet:
    """Receivers path patching writes into together: one kind, one layer (or the logits)."""

    spec: str
    kind: str
    layer: int
    receivers: tuple[int, ...]  # indices into Graph.receivers


@dataclasses.dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @functools.cached_property
    def nodes(self) -> tuple[Node, ...]:
        nodes = [Node(EMBED, "embed", -1)]
        for layer in range(self.n_layers):
            nodes += [Node(f"{layer}.{h}", "head", layer, h) for h in range(self.n_heads)]
            nodes.append(Node(f"mlp {layer}", "mlp", layer))
        return tuple(nodes)

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def serves(self, kv_head: int) -> tuple[int, ...]:
        return tuple(range(kv_head * self.group, (kv_head + 1) * self.group))

    def kv_name(self, layer: int, kv_head: int) -> str:
        return f"{layer}.{kv_head}" if self.group == 1 else f"{layer}.kv{kv_head}"

    @functools.cached_property
    def receivers(self) -> tuple[Receiver, ...]:
        out = []
        for layer in range(self.n_layers):
            out += [Receiver(f"{layer}.{h} q", "q", layer, h, (h,)) for h in range(self.n_heads)]
            for kind in ("k", "v"):
                out += [Receiver(f"{self.kv_name(layer, g)} {kind}", kind, layer, g, self.serves(g))
                        for g in range(self.n_kv_heads)]
            out.append(Receiver(f"mlp {layer}", "mlp", layer))
        out.append(Receiver(LOGITS, "logits", self.n_layers))
        return tuple(out)

    @functools.cached_property
    def node_index(self) -> dict[str, int]:
        return {node.name: i for i, node in enumerate(self.nodes)}

    @functools.cached_property
    def receiver_index(self) -> dict[str, int]:
        return {receiver.name: i for i, receiver in enumerate(self.receivers)}

    def feeds(self, node: int, receiver: int) -> bool:
        """Whether sender `node` is before receiver `receiver` (the edge exists)."""
        return self.nodes[node].stage < self.receivers[receiver].stage(self.n_layers)

    @functools.cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Every edge (node index, receiver index), receivers in order, senders in order."""
        return tuple((s, r) for r in range(len(self.receivers)) for s in range(len(self.nodes)) if self.feeds(s, r))

    def edge_name(self, edge: tuple[int, int]) -> str:
        return f"{self.nodes[edge[0]].name}->{self.receivers[edge[1]].name}"

    def stages(self) -> list[tuple[int, list[int]]]:
        """Receiver stages in forward order: (stage, the receivers reading there)."""
        by_stage: dict[int, list[int]] = {}
        for index, receiver in enumerate(self.receivers):
            by_stage.setdefault(receiver.stage(self.n_layers), []).append(index)
        return sorted(by_stage.items())

    def senders_before(self, stage: int) -> int:
        """How many nodes (a prefix of `nodes`) come before `stage`."""
        return sum(1 for node in self.nodes if node.stage < stage)

    def receiver_set(self, spec: str) -> ReceiverSet:
        """Parse a receiver-set spec (module doc); InputError (one line) when it names nothing here."""
        match = check_spec(spec)
        if match["logits"]:
            return ReceiverSet(spec, "logits", self.n_layers, (self.receiver_index[LOGITS],))
        if match["mlp"] is not None:
            layer = self._layer(int(match["mlp"]), spec)
            return ReceiverSet(spec, "mlp", layer, (self.receiver_index[f"mlp {layer}"],))
        kind = match["kind"]
        pairs = [tuple(int(x) for x in item.split(".")) for item in match["heads"].split("+")]
        layers = {layer for layer, _ in pairs}
        if len(layers) > 1:
            raise InputError(f"receiver set {spec!r} spans layers {sorted(layers)}: one set reads at one layer")
        layer = self._layer(layers.pop(), spec)
        for _, head in pairs:
            if not 0 <= head < self.n_heads:
                raise InputError(f"receiver set {spec!r}: no head {head} (a layer has {self.n_heads} heads)")
        heads = sorted({head if kind == "q" else head // self.group for _, head in pairs})
        names = [f"{layer}.{h} q" if kind == "q" else f"{self.kv_name(layer, h)} {kind}" for h in heads]
        return ReceiverSet(spec, kind, layer, tuple(self.receiver_index[name] for name in names))

    def single(self, receiver: int) -> ReceiverSet:
        """The receiver set of one receiver (an edge's receiver, for path patching that edge)."""
        r = self.receivers[receiver]
        return ReceiverSet(r.name, r.kind, r.layer, (receiver,))

    def _layer(self, layer: int, spec: str) -> int:
        if not 0 <= layer < self.n_layers:
            raise InputError(f"receiver set {spec!r}: no layer {layer} (the model has {self.n_layers})")
        return layer

    def set_heads(self, receiver_set: ReceiverSet) -> tuple[int, ...]:
        """The heads (query heads for q, key/value heads for k and v) a receiver set writes."""
        return tuple(self.receivers[r].head for r in receiver_set.receivers)


def check_spec(spec: str) -> re.Match:
    """The parsed spec, or InputError naming the forms a spec takes (checked before any model loads)."""
    match = SPEC.match(spec.strip())
    if match is None:
        raise InputError(f"receiver set {spec!r} is not one of q:L.H, k:L.H, v:L.H (several heads of one layer "
                         "joined by +, e.g. v:23.0+23.3), mlp:L, logits")
    return match
