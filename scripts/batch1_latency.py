"""Batch-1 latency: what each runtime's options do for one image, measured in one run (issue "Speed, round two").

Every configuration runs the same real input rows of the model bench prepares (``runs/bench/NAME``), one image
per call, in rounds (each round times every configuration once, so a change in machine load hits all of them),
and the report gives each one's median ms per image and its ratio to the peer default of its runtime. Outputs
are checked against fp32 (cosine >= 0.999 on every row) so no option is kept that changes the numbers.

    python scripts/batch1_latency.py --data ../shared/data --models mobilefacenet,sphere20 --json b1.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def _ov_runner(path: Path, config: dict | None, share: bool = False) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config or {})
    request = compiled.create_infer_request()
    out = compiled.output(0)

    def run(x: np.ndarray) -> np.ndarray:
        result = request.infer(x, share_inputs=share, share_outputs=share)
        return np.array(result[out])  # shared outputs are the request's own buffer: copied before the next call

    return run


def _ort_runner(path: Path, tuned: bool, spinning: str | None = None, io_binding: bool = False) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if tuned:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    if not io_binding:
        return lambda x: session.run([out_name], {name: x})[0]
    binding = session.io_binding()

    def run(x: np.ndarray) -> np.ndarray:
        binding.bind_cpu_input(name, x)
        binding.bind_output(out_name)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return run


def _torch_runner(ckpt: Path, bf16: bool, compiled: bool) -> Runner:
    import torch

    from faceembed.models.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    model, _, _ = load_checkpoint(ckpt)
    model.eval()
    fn = torch.compile(model) if compiled else model

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return fn(t)[0].float().numpy()

    return run


def configurations(model, torch_compile: bool) -> dict[str, tuple[str, Callable[[], Runner]]]:
    """name -> (runtime, factory); the runtime's peer default is the first of each runtime."""
    fp32, int8 = model.onnx_fp32, model.onnx_int8
    lat = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16"}
    cfg: dict[str, tuple[str, Callable[[], Runner]]] = {
        "openvino default compile (peer)": ("openvino", lambda: _ov_runner(fp32, None)),
        "openvino latency bf16 (faceembed)": ("openvino", lambda: _ov_runner(fp32, lat)),
        "openvino latency bf16, shared tensors": ("openvino", lambda: _ov_runner(
            fp32, lat, share=True)),
        "openvino latency bf16, 1 stream, pinned": ("openvino", lambda: _ov_runner(
            fp32, {**lat, "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": True})),
        "openvino latency bf16, not pinned": ("openvino", lambda: _ov_runner(
            fp32, {**lat, "ENABLE_CPU_PINNING": False})),
        "openvino int8 residual-float, bf16": ("openvino", lambda: _ov_runner(int8, lat)),
        "openvino int8 residual-float, shared tensors": ("openvino", lambda: _ov_runner(
            int8, lat, share=True)),
        "ort default session (peer)": ("ort", lambda: _ort_runner(fp32, False)),
        "ort tuned (faceembed)": ("ort", lambda: _ort_runner(fp32, True)),
        "ort tuned, no spinning": ("ort", lambda: _ort_runner(fp32, True, spinning="0")),
        "ort tuned, io binding": ("ort", lambda: _ort_runner(fp32, True, io_binding=True)),
    }
    if model.checkpoint is not None:
        ck = model.checkpoint
        cfg["torch eager fp32 (peer)"] = ("torch", lambda: _torch_runner(ck, False, False))
        cfg["torch eager bf16"] = ("torch", lambda: _torch_runner(ck, True, False))
        if torch_compile:
            cfg["torch.compile fp32"] = ("torch", lambda: _torch_runner(ck, False, True))
            cfg["torch.compile bf16"] = ("torch", lambda: _torch_runner(ck, True, True))
    return cfg


def measure(model, rounds: int, seconds: float, torch_compile: bool) -> list[dict]:
    """Median ms per image of every configuration at batch 1, interleaved over ``rounds``."""
    from faceembed.evaluation.scores import l2_normalize
    from faceembed.inference.timing import time_calls

    class _Call:  # time_calls wants an object with run()
        def __init__(self, fn: Runner):
            self.run = fn

    rows = np.ascontiguousarray(model.inputs[:16])
    runners = {name: (rt, make()) for name, (rt, make) in configurations(model, torch_compile).items()}
    ref_name = next(n for n, (rt, _) in runners.items() if rt == "ort")
    ref = l2_normalize(np.concatenate([runners[ref_name][1](rows[i:i + 1]) for i in range(len(rows))]).reshape(16, -1))
    times: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(rounds):
        x = rows[r % len(rows)][None]
        for name, (_, fn) in runners.items():
            times[name].append(float(np.median(time_calls(_Call(fn), x, min_seconds=seconds))))
    out = []
    for name, (rt, fn) in runners.items():
        got = l2_normalize(np.concatenate([fn(rows[i:i + 1]) for i in range(len(rows))]).reshape(16, -1))
        peer = next(n for n, (r2, _) in runners.items() if r2 == rt)
        ms = float(np.median(times[name]))
        out.append({"model": model.name, "runtime": rt, "config": name, "ms": ms,
                    "vs_runtime_peer": float(np.median(times[peer])) / ms,
                    "min_cosine": float((got * ref).sum(1).min())})
    return out


def main(argv: list[str] | None = None) -> None:
    from faceembed.bench.models import is_model_file, prepare_file, prepare_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist,mobilefacenet,sphere20,pfe,dlib-resnet")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work-dir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.4, help="timed seconds per configuration per round")
    ap.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report = []
    for name in args.models.split(","):
        model = (prepare_file(name, args.work_dir, args.data) if is_model_file(name)
                 else prepare_model(name, args.work_dir, args.data))
        for row in measure(model, args.rounds, args.seconds, args.torch_compile):
            print(f"{row['model']:14s} {row['config']:46s} {row['ms']:8.3f} ms  x{row['vs_runtime_peer']:.2f}"
                  f"  cos {row['min_cosine']:.4f}", flush=True)
            report.append(row)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
