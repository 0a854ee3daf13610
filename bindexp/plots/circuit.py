"""The edge-level figures (no pyplot): a circuit drawn over the model's layers, and a path-patching
grid as layers x senders.

Names follow `bindexp.interventions.engine.graph`: senders `embed`, `L.H`, `mlp L`; receivers
`L.H q`, `L.G k` / `L.kvG k` (a key/value head), `L.G v` / `L.kvG v`, `mlp L`, `logits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bindexp.plots.figure import new_figure

Edge = tuple[str, str, float]  # sender, receiver, score


def _node(name: str) -> str:
    """The node a sender or receiver is drawn as: a head's q (and on models without grouped queries
    its k and v) at the head itself; a grouped key/value head as its own node `L.kvG`."""
    head, _, kind = name.partition(" ")
    if kind in ("q", "k", "v"):
        return head
    return name


def _place(node: str, n_layers: int, n_heads: int, group: int) -> tuple[float, float]:
    """(x, y): heads at x = head, a layer's MLP at x = n_heads + 0.5 (half a layer up), the
    embeddings below layer 0, the logits above the last layer, a key/value head of a grouped-query
    model under the middle of the heads it serves."""
    if node == "embed":
        return (n_heads - 1) / 2, -1.0
    if node == "logits":
        return (n_heads - 1) / 2, n_layers + 0.2
    if node.startswith("mlp "):
        return n_heads + 0.5, int(node.split(" ")[1]) + 0.5
    layer, head = node.split(".")
    if head.startswith("kv"):
        return int(head[2:]) * group + (group - 1) / 2, int(layer) - 0.25
    return float(head), float(layer)


def circuit_figure(edges: Sequence[Edge], n_layers: int, n_heads: int, kv_group: int, title: str):
    """Nodes by layer (y), heads labelled `layer.head`, each edge an arrow from its sender to its
    receiver (marked q, k or v at a head's inputs) with width by |score| and colour by sign
    (score: the edge's normalized effect)."""
    import matplotlib

    figure = new_figure(max(7.0, 0.9 * n_heads + 3.0), max(4.5, 0.4 * n_layers + 2.5))
    ax = figure.subplots()
    top = max([abs(s) for _, _, s in edges] + [1e-9])
    colours = matplotlib.colormaps["coolwarm"]
    for layer in range(n_layers):  # every node, faint
        ax.scatter(range(n_heads), [layer] * n_heads, s=18, color="0.85", zorder=1)
        ax.scatter([n_heads + 0.5], [layer + 0.5], s=18, marker="s", color="0.85", zorder=1)
    used: set[str] = set()
    for sender, receiver, score in sorted(edges, key=lambda e: abs(e[2])):
        start, end = _node(sender), _node(receiver)
        used |= {start, end}
        (x0, y0), (x1, y1) = (_place(n, n_layers, n_heads, kv_group) for n in (start, end))
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                    arrowprops={"arrowstyle": "-|>", "lw": 0.6 + 4.0 * abs(score) / top, "alpha": 0.85,
                                "color": colours(0.5 + 0.5 * score / top), "shrinkA": 9, "shrinkB": 9})
        kind = receiver.rpartition(" ")[2]
        if kind in ("q", "k", "v"):
            ax.text(x1 + 0.2, y1 - 0.22, kind, fontsize=6, color="0.3", zorder=4)
    for node in used:
        x, y = _place(node, n_layers, n_heads, kv_group)
        ax.scatter([x], [y], s=420, color="white", edgecolor="black", zorder=3)
        ax.text(x, y, node, fontsize=6, ha="center", va="center", zorder=5)
    ax.set(yticks=list(range(n_layers)), ylabel="layer", xlim=(-1, n_heads + 1.5), ylim=(-1.6, n_layers + 0.8))
    ax.set_title(title, fontsize=8)
    ax.set_xticks(list(range(n_heads)) + [n_heads + 0.5], [str(h) for h in range(n_heads)] + ["mlp"], fontsize=7)
    ax.set_xlabel("head (a grouped key/value head sits under the heads it serves)", fontsize=7)
    scale = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-top, top), cmap=colours)
    figure.colorbar(scale, ax=ax, label="edge score (normalized effect)")
    figure.tight_layout()
    return figure


def sender_table(senders: Sequence[str], values: Sequence[float]) -> tuple[np.ndarray, float]:
    """A path-patching grid as [layers, heads + 1] (each layer's heads, then its MLP; NaN where the
    grid has no such sender) and the embeddings' value (NaN when absent)."""
    heads = [tuple(int(x) for x in s.split(".")) for s in senders if s[0].isdigit()]
    mlps = [int(s.split(" ")[1]) for s in senders if s.startswith("mlp ")]
    n_layers = max([h[0] for h in heads] + mlps + [0]) + 1
    n_heads = max([h[1] for h in heads] + [0]) + 1
    table, embed = np.full((n_layers, n_heads + 1), np.nan), float("nan")
    for name, value in zip(senders, values):
        if name == "embed":
            embed = float(value)
        elif name.startswith("mlp "):
            table[int(name.split(" ")[1]), n_heads] = value
        else:
            layer, head = (int(x) for x in name.split("."))
            table[layer, head] = value
    return table, embed


def sender_heatmap(grid: Any, metric: str, title: str):
    """A path-patching grid (axis "sender") as a layer x (heads, mlp) heatmap; the embeddings'
    value in the title."""
    table, embed = sender_table(grid.labels["sender"], grid.mean[metric])
    figure = new_figure(max(5.5, 0.45 * table.shape[1] + 2.5), 0.22 * table.shape[0] + 1.8)
    ax = figure.subplots()
    limit = float(np.nanmax(np.abs(np.append(table, embed)))) if np.isfinite(np.append(table, embed)).any() else 1.0
    image = ax.imshow(table, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set(xlabel="sender head (last column: the layer's MLP)", ylabel="layer")
    ax.set_title(f"{title}\nembeddings: {embed:.3f}", fontsize=8)
    ax.set_xticks(range(table.shape[1]), [str(h) for h in range(table.shape[1] - 1)] + ["mlp"], fontsize=7)
    figure.colorbar(image, ax=ax, label=metric)
    figure.tight_layout()
    return figure
