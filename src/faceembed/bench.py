"""``faceembed bench``: every model x backend x precision x batch on the same real inputs, against the
peers' defaults (PyTorch eager fp32, ONNX Runtime default session, OpenVINO default compile), with FLOPs
from the graph, the fraction of this machine's measured GEMM peak, and an accuracy check per configuration.

A configuration is *accurate* when its first output (embedding / mu / logits) has cosine >= 0.999 to PyTorch
fp32 on every real input row, and (for ``mnist``) its top-1 agrees with fp32's within 0.002 on the inputs
checked. The fastest accurate configuration per model and batch is marked ``best`` and cached for
``--backend auto`` (keyed by model file hash and machine).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.bench_models import BENCH_MODELS, BenchModel, prepare_model
from faceembed.errors import FaceembedError
from faceembed.files import write_json
from faceembed.runtime.backends import OpenVinoBackend, OrtBackend, TorchBackend, check_batch
from faceembed.runtime.flops import graph_flops_per_image, measure_peak_gflops
from faceembed.runtime.timing import time_calls

COSINE_MIN = 0.999
# (backend, precision, config name, peer default)
CONFIGS: list[tuple[str, str, str, bool]] = [
    ("torch", "fp32", "eager (peer default)", True),
    ("torch", "bf16", "eager + autocast bf16", False),
    ("ort", "fp32", "default session (peer default)", True),
    ("ort", "fp32", "tuned session", False),
    ("ort", "int8", "tuned session, int8 QDQ", False),
    ("openvino", "bf16", "default compile (peer default; bf16 on AVX-512 BF16 CPUs)", True),
    ("openvino", "fp32", "f32 hint", False),
    ("openvino", "bf16", "bf16 hint", False),
    ("openvino", "int8", "int8 QDQ, bf16 hint", False),
]


@dataclass
class BenchOptions:
    """What ``faceembed bench`` runs."""

    models: list[str] = field(default_factory=lambda: ["mnist", "mobilefacenet", "sphere20", "pfe"])
    backends: list[str] = field(default_factory=lambda: ["torch", "ort", "openvino"])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16", "int8"])
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: int = 2
    min_seconds: float = 1.0
    min_runs: int = 5
    work_dir: Path = Path("runs/bench")
    data: Path | None = None


class _DefaultOrt(OrtBackend):
    """ONNX Runtime exactly as a peer would open it: ``InferenceSession(path)``, nothing set."""

    def __init__(self, path, threads):
        import onnxruntime as ort

        super().__init__(path, threads)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class _DefaultOpenVino(OpenVinoBackend):
    """OpenVINO exactly as a peer would compile it: ``core.compile_model(path, "CPU")``."""

    def __init__(self, path, threads):
        import openvino as ov

        super().__init__(path, threads, "fp32")
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU")
        self.request = self.compiled.create_infer_request()
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()


def _open(model: BenchModel, backend: str, precision: str, peer: bool, threads: int):
    if backend == "torch":
        if peer:
            import torch

            torch.set_num_threads(threads)
        return TorchBackend(model.checkpoint, threads, precision)
    path = model.onnx_int8 if precision == "int8" else model.onnx_fp32
    if backend == "ort":
        return _DefaultOrt(path, threads) if peer else OrtBackend(path, threads)
    if peer:
        return _DefaultOpenVino(path, threads)
    return OpenVinoBackend(path, threads, "bf16" if precision == "int8" else precision)


def accuracy_check(outputs: list[np.ndarray], reference: list[np.ndarray], is_classifier: bool) -> dict[str, Any]:
    """Cosine of the first output to PyTorch fp32 per row, and top-1 agreement for classifiers."""
    a = outputs[0].astype(np.float64).reshape(len(outputs[0]), -1)
    b = reference[0].astype(np.float64).reshape(len(reference[0]), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    result: dict[str, Any] = {"min_cosine": float(cos.min())}
    ok = bool(cos.min() >= COSINE_MIN)
    if is_classifier:
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        result["top1_agreement"] = agree
        ok &= agree >= 1 - 0.002
    result["accuracy_ok"] = ok
    return result


def _selected(options: BenchOptions) -> list[tuple[str, str, str, bool]]:
    return [c for c in CONFIGS if c[0] in options.backends and (c[3] or c[1] in options.precisions)]


def run_bench(options: BenchOptions, json_path: str | Path | None = None, plot_path: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run the benchmark and return (and write) its report."""
    from rich.progress import Progress

    for name in options.models:
        if name not in BENCH_MODELS:
            raise FaceembedError(f"unknown model {name!r}; choose from {', '.join(BENCH_MODELS)}")
    peak = measure_peak_gflops(options.threads)
    report: dict[str, Any] = {"peak_gflops": {"fp32": peak["fp32"], "bf16": peak["bf16"]}, "peak_detail": peak,
                              "threads": options.threads, "machine": _machine(), "rows": [], "best": {}}
    configs = _selected(options)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("bench", total=len(options.models) * len(configs))
        for name in options.models:
            bar.update(task, description=f"prepare {name}")
            model = prepare_model(name, options.work_dir, options.data)
            bar.update(task, description=f"bench {name}")
            gflop = graph_flops_per_image(model.onnx_fp32) / 1e9
            reference = TorchBackend(model.checkpoint, options.threads).run(model.inputs)
            for backend, precision, config, peer in configs:
                bar.advance(task)
                try:
                    be = _open(model, backend, precision, peer, options.threads)
                except Exception as exc:  # a backend that cannot run here is reported, not fatal
                    report.setdefault("skipped", []).append(f"{name} {backend} {config}: {exc}")
                    continue
                check = accuracy_check(be.run(model.inputs), reference, model.is_classifier)
                for b in options.batches:
                    x = check_batch(np.ascontiguousarray(np.resize(model.inputs, (b, *model.inputs.shape[1:]))),
                                    be.item_shape)
                    t = time_calls(be, x, min_seconds=options.min_seconds, min_runs=options.min_runs)
                    med = float(np.median(t))
                    peak_key = "bf16" if be.precision in ("bf16", "int8") else "fp32"
                    report["rows"].append({
                        "model": name, "backend": backend, "precision": be.precision, "batch": b,
                        "config": config, "ms_per_batch_median": med,
                        "ms_per_batch_p90": float(np.percentile(t, 90)), "ms_per_image": med / b,
                        "images_per_s": 1e3 * b / med, "gflop_per_image": gflop,
                        "fraction_of_peak": gflop * b / (med / 1e3) / report["peak_gflops"][peak_key],
                        "accuracy_ok": check["accuracy_ok"], "accuracy": check, "peer_default": peer})
    report["best"] = best_rows(report["rows"])
    report["speedup_vs_best_peer"] = speedups(report["rows"], report["best"])
    if json_path:
        write_json(json_path, report)
    if plot_path:
        from faceembed.report.bench_plot import plot_bench

        plot_bench(report, plot_path)
    return report


def best_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Index of the fastest accurate row per model and batch (peers' rows included: they can win)."""
    best: dict[str, dict[str, int]] = {}
    for i, row in enumerate(rows):
        if not row["accuracy_ok"]:
            continue
        slot = best.setdefault(row["model"], {})
        key = str(row["batch"])
        if key not in slot or row["images_per_s"] > rows[slot[key]]["images_per_s"]:
            slot[key] = i
    return best


def speedups(rows: list[dict[str, Any]], best: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Best accurate configuration's images/s over the fastest peer default's, per model and batch."""
    out: dict[str, dict[str, float]] = {}
    for model, by_batch in best.items():
        for batch, idx in by_batch.items():
            peers = [r["images_per_s"] for r in rows if r["model"] == model and str(r["batch"]) == batch
                     and r["peer_default"]]
            if peers:
                out.setdefault(model, {})[batch] = rows[idx]["images_per_s"] / max(peers)
    return out


def _machine() -> dict[str, Any]:
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
