"""CMC curve (identification rate against rank) as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from faceembed.files import write_with


def plot_cmc(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "CMC") -> None:
    """Plot ``{label: [rate at rank 1, rank 2, ...]}`` and write the PNG atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    lowest = 1.0
    for label, cmc in curves.items():
        ranks = list(range(1, len(cmc) + 1))
        ax.plot(ranks, list(cmc), marker="o", markersize=3, linewidth=1.5, label=f"{label} (rank-1 {cmc[0]:.4f})")
        lowest = min(lowest, min(cmc) if len(cmc) else 1.0)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    ax.set_ylim(max(0.0, lowest - 0.02), 1.002)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
