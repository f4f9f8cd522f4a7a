"""The bench report as terminal tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_bench(report: dict[str, Any]) -> None:
    """One table of every row (best rows starred), then the speed-up over the fastest peer default."""
    peak = report["peak_gflops"]
    table = Table(title=f"faceembed bench, {report['threads']} threads; measured peak fp32 {peak['fp32']:.0f}, "
                        f"bf16 {peak['bf16']:.0f} GFLOP/s")
    numeric = ("batch", "ms/batch", "ms/image", "img/s", "% peak")
    for col in ("model", "batch", "backend", "precision", "config", *numeric[1:], "accurate"):
        table.add_column(col, justify="right" if col in numeric else "left")
    best = {idx for by_batch in report["best"].values() for idx in by_batch.values()}
    for i, r in enumerate(report["rows"]):
        table.add_row(("* " if i in best else "") + r["model"], str(r["batch"]), r["backend"], r["precision"],
                      r["config"], f"{r['ms_per_batch_median']:.2f}", f"{r['ms_per_image']:.3f}",
                      f"{r['images_per_s']:.0f}", f"{100 * r['fraction_of_peak']:.0f}",
                      "yes" if r["accuracy_ok"] else f"no ({r['accuracy']['min_cosine']:.4f})")
    console = Console()
    console.print(table)
    for model, by_batch in report.get("speedup_vs_best_peer", {}).items():
        console.print(f"{model}: best accurate / fastest peer default = "
                      + ", ".join(f"batch {b}: {v:.2f}x" for b, v in by_batch.items()))
