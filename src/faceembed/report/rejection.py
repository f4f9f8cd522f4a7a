"""Error-versus-reject curves (risk-controlled verification, Shi & Jain, ICCV 2019) as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from faceembed.files import write_with

_STYLES = ("o-", "s--", "^-.", "D:", "v-")


def plot_rejection(
    curves: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, title: str = "Error versus reject"
) -> None:
    """Plot verification error (1 - accuracy, in %) against the fraction of pairs rejected (in %), one line
    per method (e.g. ``{"uncertainty (PFE)": rows, "random": rows, "detector score": rows}`` with the rows of
    :func:`faceembed.evaluation.rejection.rejection_curve`), and write the PNG atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, rows) in enumerate(curves.items()):
        x = [100.0 * r["fraction"] for r in rows]
        y = [100.0 * r["error"] for r in rows]
        ax.plot(x, y, _STYLES[i % len(_STYLES)], label=label, linewidth=1.5, markersize=5)
    ax.set_xlabel("Pairs rejected (%)")
    ax.set_ylabel("Verification error (%)")
    ax.set_ylim(bottom=0.0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="best")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
