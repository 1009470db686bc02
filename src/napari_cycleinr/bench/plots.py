"""Figures of an evaluation (matplotlib, imported only when a figure is drawn)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np


def plot_snli(
    results: list[dict[str, Any]], path: str | os.PathLike[str], *, protected: Iterable[Any] = ()
) -> None:
    """Per-sample SNLI of each method against the reference's own: the diagonal is a perfect match. Written
    through the output guard (never over `protected`, the evaluation's references and models), atomically."""
    from napari_cycleinr.io.guard import write_guarded

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    methods = list(dict.fromkeys(m for r in results for m in r["methods"]))
    colours = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    markers = "osD^vPX<>*"
    for i, method in enumerate(methods):
        xs = [r["reference_snli"] for r in results if method in r["methods"]]
        ys = [r["methods"][method]["snli"] for r in results if method in r["methods"]]
        ax.scatter(xs, ys, label=method, alpha=0.8, color=colours(i % colours.N), marker=markers[i % len(markers)])
    everything = [r["reference_snli"] for r in results] + [m["snli"] for r in results for m in r["methods"].values()]
    top = max((v for v in everything if v is not None and np.isfinite(v)), default=1.0) * 1.1
    ax.plot([0, top], [0, top], "k--", lw=1, label="same as reference")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("SNLI of the thin reference")
    ax.set_ylabel("SNLI of the super-resolved volume")
    ax.set_title("Slice-wise noise level inconsistency (lower, closer to the diagonal, is better)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_guarded(path, lambda tmp: fig.savefig(tmp, format="png"), protected=protected)
    finally:
        plt.close(fig)
