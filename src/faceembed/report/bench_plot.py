"""Bench chart: images per second of every configuration, per model and batch, peer defaults hatched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from faceembed.report.plots import save_figure


def plot_bench(report: dict[str, Any], path: str | Path) -> None:
    """One panel per (model, batch): horizontal bars of images/s; the best accurate row is outlined."""
    rows = report["rows"]
    panels = sorted({(r["model"], r["batch"]) for r in rows}, key=lambda p: (p[0], p[1]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 + 0.35 * 9 * len(panels) / max(1, len(panels))),
                             squeeze=False)
    fig.set_figheight(max(3.0, 2.6 * len(panels)))
    for ax, (model, batch) in zip(axes[:, 0], panels, strict=True):
        idx = [i for i, r in enumerate(rows) if r["model"] == model and r["batch"] == batch]
        labels = [f"{rows[i]['backend']} {rows[i]['precision']}: {rows[i]['config']}" for i in idx]
        speed = np.array([rows[i]["images_per_s"] for i in idx])
        best = report.get("best", {}).get(model, {}).get(str(batch))
        bars = ax.barh(range(len(idx)), speed, color=["#bbbbbb" if rows[i]["peer_default"] else "#3b7dd8" for i in idx])
        for bar, i in zip(bars, idx, strict=True):
            if not rows[i]["accuracy_ok"]:
                bar.set_hatch("xx")
            if i == best:
                bar.set_edgecolor("black")
                bar.set_linewidth(2)
        ax.set_yticks(range(len(idx)), labels, fontsize=7)
        ax.set_title(f"{model}, batch {batch} (grey: peer defaults, hatched: accuracy not kept, outlined: best)",
                     fontsize=8)
        ax.set_xlabel("images / s", fontsize=8)
        ax.invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)
