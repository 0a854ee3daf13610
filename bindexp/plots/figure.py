"""The one way a figure is made here: without pyplot (saving it needs no backend)."""

from __future__ import annotations


def new_figure(width: float, height: float, **options):
    """A figure made without pyplot (saving it needs no backend); `options`: Figure's (e.g. layout)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **options)
