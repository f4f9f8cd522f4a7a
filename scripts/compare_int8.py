"""NNCF vs residual-float int8 at the same accuracy limit, on OpenVINO (docs/benchmarks.md, "NNCF vs residual-float").

Per model: bench's fp32 ONNX and residual-float int8 file (``faceembed.bench.models.prepare_model``: 256
calibration rows, 64 check rows calibration never sees), an NNCF int8 file from the same 256 calibration rows
(``quantize --method nncf``: a quarter held out for accuracy control, target 0.9995 like residual-float's
search), then the first output's min cosine to PyTorch fp32 on the 64 check rows through OpenVINO int8 (bench's
acceptance bar: 0.999), and ms/image at each batch, the files timed in alternating rounds in this one process
(median of all calls), beside OpenVINO's default compile of the fp32 file (bf16 on AVX-512 BF16 CPUs).

    python scripts/compare_int8.py --data ../shared/data --models mnist,mobilefacenet,sphere20 --json cmp.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _calibration(name: str, data: Path | None) -> np.ndarray:
    """The 256 rows bench's prepare_model calibrates on (MNIST train digits; LFW faces not every fifth)."""
    if name == "mnist":
        from faceembed.batch.tobin import mnist_tensors

        return mnist_tensors("train", limit=256)[0]
    from faceembed.bench.models import _face_inputs

    faces = _face_inputs(data, 320)
    return np.delete(faces, np.s_[::5], axis=0)


def _default_openvino(path: Path, threads: int):
    """OpenVINO as bench's peer default compiles it (no precision hint), with ``threads`` threads."""
    import openvino as ov

    from faceembed.inference.backends import OpenVinoBackend

    backend = OpenVinoBackend(path, threads, "fp32")
    core = ov.Core()
    backend.compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": threads})
    backend.request = backend.compiled.create_infer_request()
    return backend


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.min())


def compare(name: str, work_dir: Path, data: Path | None, batches: list[int], threads: int, rounds: int,
            calls: int, min_cosine: float) -> list[dict]:
    import onnx

    from faceembed.bench.models import prepare_model
    from faceembed.export.qdq_graph import LAYER_OPS
    from faceembed.export.quantize_nncf import int8_layers, quantize_nncf
    from faceembed.inference.backends import OpenVinoBackend, TorchBackend, run_batched
    from faceembed.inference.timing import time_calls

    t0 = time.perf_counter()
    model = prepare_model(name, work_dir, data, int8_schemes=("residual-float",))
    rf_seconds = time.perf_counter() - t0
    nncf_path = model.onnx_int8.with_name(f"{name}.int8-nncf.onnx")
    nncf_report = quantize_nncf(model.onnx_fp32, _calibration(name, data), nncf_path, max_images=256,
                                min_cosine=min_cosine)
    check = model.inputs[:64]
    reference = run_batched(TorchBackend(model.checkpoint, threads), check, 32)[0]
    files = {"residual-float": model.onnx_int8, "nncf": nncf_path}
    backends = {k: OpenVinoBackend(p, threads, "int8") for k, p in files.items()}
    backends["openvino default (fp32 file)"] = _default_openvino(model.onnx_fp32, threads)
    rows = {}
    for key, backend in backends.items():
        path = files.get(key, model.onnx_fp32)
        graph = onnx.load(str(path))
        n_int8 = len(int8_layers(graph))
        rows[key] = {"model": name, "file": key, "int8_layers": n_int8,
                     "layers": sum(n.op_type in LAYER_OPS for n in graph.graph.node),
                     "min_cosine_check64": _min_cosine(run_batched(backend, check, 32)[0], reference)}
    rows["nncf"]["quantize_s"] = nncf_report["seconds"]
    rows["nncf"]["holdout_min_cosine"] = nncf_report["holdout_min_cosine"]
    rows["residual-float"]["quantize_s"] = round(rf_seconds, 2)  # 0 when bench's file was already made
    for b in batches:
        batch = np.ascontiguousarray(np.resize(check, (b, *check.shape[1:])))
        times = {k: [] for k in backends}
        for _ in range(rounds):  # alternate the files so drift on a shared machine hits them alike
            for key, backend in backends.items():
                times[key].extend(time_calls(backend, batch, warmup=2, min_runs=calls, min_seconds=0.0,
                                             max_runs=calls).tolist())
        for key in backends:
            rows[key][f"b{b}_ms_per_image"] = float(np.median(times[key]) / b)
            rows[key][f"b{b}_calls"] = len(times[key])
    return list(rows.values())


def _table(rows: list[dict], batches: list[int]) -> str:
    head = ["model", "int8 file", "int8 layers / layers", "min cosine, 64 check rows"]
    head += [f"b{b} ms/image" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "--|" * len(head)]
    for r in rows:
        cells = [r["model"], r["file"], f"{r['int8_layers']} / {r['layers']}", f"{r['min_cosine_check64']:.4f}"]
        cells += [f"{r[f'b{b}_ms_per_image']:.3f}" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,mobilefacenet,sphere20", help="comma-separated bench models")
    parser.add_argument("--data", type=Path, default=None, help="../shared/data (LFW, MobileFaceNet weights)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench"), help="bench's prepared models")
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="alternating timing rounds")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per file per round")
    parser.add_argument("--min-cosine", type=float, default=0.9995, help="NNCF accuracy-control target")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    import openvino  # noqa: F401  (fail early with a clear ImportError when OpenVINO is missing)

    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows += compare(name, args.work_dir, args.data, batches, args.threads, args.rounds, args.calls,
                        args.min_cosine)
        print(_table(rows[-3:], batches), flush=True)
    print(_table(rows, batches))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
