"""The per-stage chart of ``faceembed bench --pipeline``: milliseconds per photo of each stage alone, their sum
(the limit), the overlapped pipeline, ``faceembed enroll`` as a process and face_recognition's pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_pipeline(report: dict[str, Any], path: str | Path) -> None:
    """Horizontal bars (log scale) of the report's per-photo times, written atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faceembed.files import write_with

    rows = [(f"{k} (alone)", v, "tab:blue") for k, v in report["stages_ms_per_photo"].items()]
    rows.append(("sum of stages (limit)", report["limit_ms_per_photo"], "tab:gray"))
    rows.append(("pipeline, end to end", report["end_to_end"]["ms_per_photo"], "tab:green"))
    rows.append(("faceembed enroll process", 1e3 / report["enroll"]["photos_per_s"], "tab:olive"))
    rows.append(("FaceAnalyzer.faces, 1 photo", report["api"]["median_ms"], "tab:cyan"))
    if "face_recognition" in report:
        fr = report["face_recognition"]
        rows.append(("face_recognition pipeline", 1e3 / fr["photos_per_s"], "tab:red"))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2))
    names, values, colours = zip(*rows, strict=True)
    ax.barh(range(len(rows)), values, color=colours)
    for i, v in enumerate(values):
        ax.text(v * 1.05, i, f"{v:.3g} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per photo (LFW, {report['photos']} photos, {report['threads']} cores; lower is faster)")
    ax.set_xlim(min(values) / 2, max(values) * 4)
    fig.tight_layout()
    write_with(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
