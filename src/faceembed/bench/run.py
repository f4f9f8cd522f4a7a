"""``faceembed bench``: every model x backend x precision x batch on the same real inputs, against the
peers' defaults (PyTorch eager fp32, ONNX Runtime default session, OpenVINO default compile), with FLOPs
from the graph, the fraction of this machine's measured GEMM peak, and an accuracy check per configuration.

A configuration is *accurate* when one of two gates accepts it (:func:`~faceembed.bench.accuracy.accuracy_gates`;
each row says ``min_cosine_gate``, ``task_gate`` and ``accurate_by``). The min-cosine gate: its first output
(embedding / mu / logits) has cosine >= 0.999 to PyTorch fp32 on every real input row, (for ``mnist``) its
top-1 agrees with fp32's within 0.002 on the inputs checked, and its task accuracy (when measured) is within
the precision's loss limit. The task gate, for int8 and bf16 rows of face models with LFW figures: LFW 10-fold
accuracy within 0.001 and TAR at FAR 1e-3 within 0.005 of fp32's on the same inputs
(:mod:`faceembed.bench.accuracy`). The fastest accurate configuration per model and batch is marked ``best``
and cached for ``--backend auto`` (keyed by model file hash and machine).

``models`` may name model files beside the built-in models (``bench --models mobilefacenet,w600k.onnx``): each
is measured against the same peers on real inputs made per its model card (:func:`~faceembed.bench.models.
prepare_file`); an ONNX file's reference is ONNX Runtime fp32 on the file (it has no PyTorch rows).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.bench.accuracy import TaskData, accuracy_gates, compare_to_fp32
from faceembed.bench.flops import graph_flops_per_image, measure_peak_gflops
from faceembed.bench.models import BENCH_MODELS, BenchModel, is_model_file, prepare_file, prepare_model
from faceembed.errors import FaceembedError, NonFiniteError
from faceembed.evaluation.scores import cosine_scores
from faceembed.files import write_json
from faceembed.inference.backends import OpenVinoBackend, OrtBackend, TorchBackend, check_batch
from faceembed.inference.timing import time_calls

COSINE_MIN = 0.999
# (backend, precision, config name, peer default)
CONFIGS: list[tuple[str, str, str, bool]] = [
    ("torch", "fp32", "eager (peer default)", True),
    ("torch", "bf16", "eager + autocast bf16", False),
    ("ort", "fp32", "default session (peer default)", True),
    ("ort", "fp32", "tuned session", False),
    ("ort", "int8", "tuned session, int8 QDQ (scheme full)", False),
    ("openvino", "bf16", "default compile (peer default; bf16 on AVX-512 BF16 CPUs)", True),
    ("openvino", "fp32", "f32 hint", False),
    ("openvino", "bf16", "bf16 hint", False),
    ("openvino", "int8", "int8 QDQ (scheme residual-float), bf16 hint", False),
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
    data_path: bool = True  # also time LFW alignment + preprocessing and verification (needs data)
    ort_ablation: bool = False  # also time each ONNX Runtime session choice on its own (bench_ort)
    task_accuracy: bool = True  # MNIST / LFW accuracy of every configuration beside fp32 (bench_accuracy)
    overwrite: bool = False  # a work folder made from other weights or images: rebuild it instead of refusing


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
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)

    def _run(self, batch):  # a peer's call: infer() with its default copies
        result = self.request.infer({self.input_name: batch})
        return [np.asarray(result[self.compiled.output(name)]) for name in self.output_names]


#: dlib's own runtime: a peer-default row for the dlib ResNet (what face_recognition users run).
DLIB_PEER = ("dlib", "fp32", "dlib's own runtime (peer default; dlib-bin)", True)


def _configs_for(model: BenchModel, configs: list[tuple[str, str, str, bool]]) -> list[tuple[str, str, str, bool]]:
    """The configurations run for ``model``: the selected ones, and dlib's runtime for the dlib ResNet."""
    arch = getattr(getattr(model, "card", None), "arch", None)
    return configs + [DLIB_PEER] if arch == "dlib_resnet" else configs


def _open(model: BenchModel, backend: str, precision: str, peer: bool, threads: int, config: str = ""):
    if backend == "dlib":
        from faceembed.bench.peers import DlibPeer

        return DlibPeer(threads)
    if backend == "torch":
        if model.checkpoint is None:
            raise FaceembedError("the torch backend runs faceembed checkpoints; this model file is ONNX")
        if peer:
            import torch

            torch.set_num_threads(threads)
        return TorchBackend(model.checkpoint, threads, precision)
    path = model.onnx_for(backend, precision)
    if backend == "ort":
        provider = next((p for c, p in GPU_CONFIGS if c == config), "cpu")
        return _DefaultOrt(path, threads) if peer else OrtBackend(path, threads, provider)
    if peer:
        return _DefaultOpenVino(path, threads)
    return OpenVinoBackend(path, threads, precision)


def accuracy_check(outputs: list[np.ndarray], reference: list[np.ndarray], is_classifier: bool) -> dict[str, Any]:
    """Cosine of the first output to PyTorch fp32 per row, and top-1 agreement for classifiers."""
    a = outputs[0].reshape(len(outputs[0]), -1)
    b = reference[0].reshape(len(reference[0]), -1)
    try:
        cos = cosine_scores(a, b)
    except NonFiniteError:  # NaN / Inf outputs: reported as inaccurate, not fatal to the run
        cos = np.array([np.nan])
    result: dict[str, Any] = {"min_cosine": float(cos.min())}
    ok = bool(cos.min() >= COSINE_MIN)
    if is_classifier:
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        result["top1_agreement"] = agree
        ok &= agree >= 1 - 0.002
    result["accuracy_ok"] = ok
    return result


# Rows added when ONNX Runtime has the execution provider (a GPU machine): (config name, provider).
GPU_CONFIGS = [("CUDA execution provider", "cuda"), ("TensorRT execution provider", "tensorrt")]


def _gpu_providers() -> list[str]:
    from faceembed.inference.backends import PROVIDERS

    try:
        import onnxruntime as ort
    except ImportError:
        return []
    available = set(ort.get_available_providers())
    return [name for _, name in GPU_CONFIGS if PROVIDERS[name] in available]


def _selected(options: BenchOptions) -> list[tuple[str, str, str, bool]]:
    rows = [c for c in CONFIGS if c[0] in options.backends and (c[3] or c[1] in options.precisions)]
    if "ort" in options.backends and "fp32" in options.precisions:
        gpu = set(_gpu_providers())
        rows += [("ort", "fp32", config, False) for config, provider in GPU_CONFIGS if provider in gpu]
    return rows


def run_bench(options: BenchOptions, json_path: str | Path | None = None, plot_path: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run the benchmark and return (and write) its report."""
    from rich.progress import Progress

    for name in options.models:
        if name not in BENCH_MODELS and not is_model_file(name):
            raise FaceembedError(f"unknown model {name!r}; choose from {', '.join(BENCH_MODELS)} or give a model "
                                 "file (.onnx with a model card, faceembed checkpoint .pt)")
    configs = _selected(options)
    schemes = _int8_schemes(configs)
    peak = measure_peak_gflops(options.threads)
    report: dict[str, Any] = {"peak_gflops": {"fp32": peak["fp32"], "bf16": peak["bf16"]}, "peak_detail": peak,
                              "threads": options.threads, "machine": _machine(), "rows": [], "best": {}}
    prepared: dict[str, BenchModel] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("bench", total=len(options.models) * len(configs))
        for name in options.models:
            bar.update(task, description=f"prepare {name}")
            prepare = prepare_file if is_model_file(name) else prepare_model
            model = prepared[name] = prepare(name, options.work_dir, options.data, options.overwrite, schemes)
            bar.update(task, description=f"bench {name}")
            gflop = graph_flops_per_image(model.onnx_fp32) / 1e9
            reference_backend = (TorchBackend(model.checkpoint, options.threads) if model.checkpoint is not None
                                 else OrtBackend(model.onnx_fp32, options.threads))
            reference = reference_backend.run(model.inputs)
            task_data = (TaskData(name, options.data, model.trained, model.card) if options.task_accuracy
                         else None)
            task_ref = task_data.evaluate(reference_backend) if task_data else None
            task_results: dict[tuple, dict[str, Any] | None] = {}
            if options.ort_ablation:
                from faceembed.bench.ort_ablation import ort_ablation

                report.setdefault("ort_ablation", {})[name] = ort_ablation(
                    model.onnx_fp32, model.inputs, options.threads, options.batches, options.min_seconds)
            for backend, precision, config, peer in _configs_for(model, configs):
                bar.advance(task)
                try:
                    be = _open(model, backend, precision, peer, options.threads, config)
                except Exception as exc:  # a backend that cannot run here is reported, not fatal
                    report.setdefault("skipped", []).append(f"{name} {backend} {config}: {exc}")
                    continue
                check = accuracy_check(be.run(model.inputs), reference, model.is_classifier)
                if task_ref is not None and backend != "dlib":  # dlib computes the converted model's numbers (6e-7)
                    numeric = (backend, be.precision, precision == "int8")  # peers compute the same numbers
                    if numeric not in task_results:
                        task_results[numeric] = compare_to_fp32(task_data.evaluate(be), task_ref, be.precision)
                    check["task"] = task_results[numeric]
                check.update(accuracy_gates(check["accuracy_ok"], check.get("task"), be.precision))
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
                        "accuracy_ok": check["accuracy_ok"], "min_cosine_gate": check["min_cosine_gate"],
                        "task_gate": check["task_gate"], "accurate_by": check["accurate_by"], "accuracy": check,
                        "peer_default": peer})
    # The peak is measured again at the end and the better reading kept: a GEMM timed while another process
    # briefly held the cores would otherwise understate it (and overstate every fraction of peak).
    _remeasure_peak(report)
    report["best"] = best_rows(report["rows"])
    report["speedup_vs_best_peer"] = speedups(report["rows"], report["best"])
    _record_auto_choices(report["rows"], prepared, options.threads)
    if options.data_path:
        from faceembed.bench.data_path import time_data_path

        report["data_path"] = time_data_path(options.data)
    if json_path:
        write_json(json_path, report)
    if plot_path:
        from faceembed.report.bench_plot import plot_bench

        plot_bench(report, plot_path)
    return report


def _int8_schemes(configs: list[tuple[str, str, str, bool]]) -> tuple[str, ...]:
    """The int8 files the selected configurations run: residual-float for OpenVINO, full for ONNX Runtime."""
    backends = {backend for backend, precision, _, _ in configs if precision == "int8"}
    return tuple(s for s, b in (("residual-float", "openvino"), ("full", "ort")) if b in backends)


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


def _remeasure_peak(report: dict[str, Any]) -> None:
    again = measure_peak_gflops(report["threads"])
    for key in ("fp32", "bf16"):
        report["peak_gflops"][key] = max(report["peak_gflops"][key], again[key])
    report["peak_detail"] = {"start": report["peak_detail"], "end": again}
    for row in report["rows"]:
        peak = report["peak_gflops"]["bf16" if row["precision"] in ("bf16", "int8") else "fp32"]
        row["fraction_of_peak"] = row["gflop_per_image"] * row["images_per_s"] / peak


def _record_auto_choices(rows: list[dict[str, Any]], models: dict[str, BenchModel], threads: int) -> None:
    """Cache, per model file and batch, its fastest accurate tuned configuration for ``--backend auto``."""
    from faceembed.inference.autoselect import record_choice

    best: dict[tuple[Path, int], dict[str, Any]] = {}
    for row in rows:
        if row["peer_default"] or not row["accuracy_ok"]:
            continue
        model = models[row["model"]]
        path = model.checkpoint if row["backend"] == "torch" else model.onnx_for(row["backend"], row["precision"])
        key = (path, row["batch"])
        if key not in best or row["images_per_s"] > best[key]["images_per_s"]:
            best[key] = row
    for (path, batch), row in best.items():
        record_choice(path, threads, batch, {"backend": row["backend"], "precision": row["precision"],
                                             "ms_per_image": row["ms_per_image"], "source": "faceembed bench"})


def _machine() -> dict[str, Any]:
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
