"""ROC curves (log-scale FAR axis) as a PNG."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from faceembed.files import write_with


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
             title: str = "ROC", min_far: float | None = None) -> None:
    """Plot ``{label: (far, tar)}`` with a logarithmic FAR axis and write the PNG atomically.

    Points with FAR = 0 cannot sit on a log axis and are left out; ``min_far`` sets the left edge
    (default: the smallest positive FAR among the curves).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    smallest = 1.0
    for label, (far, tar) in curves.items():
        far, tar = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
        keep = far > 0
        if keep.any():
            smallest = min(smallest, float(far[keep].min()))
            ax.plot(far[keep], tar[keep], label=label, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlim(min_far if min_far is not None else smallest, 1.0)
    ax.set_ylim(0.0, 1.005)
    ax.set_xlabel("False accept rate")
    ax.set_ylabel("True accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=120))
