"""The bench report as terminal tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_bench(report: dict[str, Any]) -> None:
    """One table of every row (best rows starred; both accuracy gates and the verdict), then the speed-up over
    the fastest peer default."""
    peak = report["peak_gflops"]
    table = Table(title=f"faceembed bench, {report['threads']} threads; measured peak fp32 {peak['fp32']:.0f}, "
                        f"bf16 {peak['bf16']:.0f} GFLOP/s")
    numeric = ("batch", "ms/batch", "ms/image", "img/s", "% peak")
    for col in ("model", "batch", "backend", "precision", "config", *numeric[1:], "cos gate", "task gate", "accurate"):
        table.add_column(col, justify="right" if col in numeric else "left")
    best = {idx for by_batch in report["best"].values() for idx in by_batch.values()}
    for i, r in enumerate(report["rows"]):
        table.add_row(("* " if i in best else "") + r["model"], str(r["batch"]), r["backend"], r["precision"],
                      r["config"], f"{r['ms_per_batch_median']:.2f}", f"{r['ms_per_image']:.3f}",
                      f"{r['images_per_s']:.0f}", f"{100 * r['fraction_of_peak']:.0f}",
                      r.get("min_cosine_gate", ""), r.get("task_gate", ""), _accuracy_cell(r))
    console = Console()
    console.print(table)
    for model, by_batch in report.get("speedup_vs_best_peer", {}).items():
        console.print(f"{model}: best accurate / fastest peer default = "
                      + ", ".join(f"batch {b}: {v:.2f}x" for b, v in by_batch.items()))
    dp = report.get("data_path")
    if dp:
        a, v = dp["align_preprocess"], dp["verify"]
        console.print(f"data path: align + preprocess {a['images']} LFW images in {a['seconds']:.1f} s "
                      f"({a['images_per_s']:.0f} images/s, {a['workers']} processes); verify {v['pairs']} pairs x "
                      f"{v['folds']} folds in {v['seconds']:.3f} s ({v['seconds_flip_meansub']:.3f} s with flip "
                      f"+ mean subtraction)")
    for model, rows in report.get("ort_ablation", {}).items():
        console.print(f"ONNX Runtime session choices, {model} (time relative to faceembed's tuned session): "
                      + "; ".join(f"{r['variant']} b{r['batch']} {r['time_vs_tuned']:.2f}x" for r in rows))


def _accuracy_cell(row: dict[str, Any]) -> str:
    """'yes' (by which gate) or 'no', with the minimum cosine to fp32 and the task figures' changes when
    measured (accuracy; TAR at FAR)."""
    acc = row["accuracy"]
    notes = [f"cos {acc['min_cosine']:.4f}"]
    if "task" in acc:
        task = acc["task"]
        notes.append(f"acc {task['accuracy']:.4f} ({task['delta']:+.4f})")
        if "tar_delta" in task:
            notes.append(f"TAR@{task['tar_far']:g} {task['tar_at_far']:.4f} ({task['tar_delta']:+.4f})")
    by = row.get("accurate_by")
    verdict = ("yes" + (f" by {by}" if by else "")) if row["accuracy_ok"] else "no"
    return verdict + " (" + ", ".join(notes) + ")"
