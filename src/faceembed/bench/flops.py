"""FLOPs of a model counted from its ONNX graph, and the machine's measured matrix-multiply peak.

FLOPs count the multiply-adds of Conv, ConvTranspose, Gemm and MatMul (2 FLOPs each), the work that
dominates CNN inference; element-wise ops are left out, so achieved GFLOP/s is a slight under-estimate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def graph_flops_per_image(path: str | Path) -> float:
    """FLOPs per image of the ONNX model at ``path`` (batch fixed to 1 for shape inference)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape) if init.dims else []
    total = 0
    for node in model.graph.node:
        out_shape = shapes.get(node.output[0], [])
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = shapes.get(node.input[1], [])
            if out_shape and len(w) >= 3:
                # each output element takes (C_in / group) * kH * kW multiply-adds = prod(w[1:])
                total += 2 * int(np.prod(out_shape)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0], [])
            if out_shape and a:
                k = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[-2]
                total += 2 * int(np.prod(out_shape)) * int(k)
    return float(total)


def _attr(node, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


def _best_gflops(run, flops: float, repeats: int = 20) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def measure_peak_gflops(threads: int, n: int = 1024) -> dict[str, float]:
    """Best large-GEMM rate of this machine with ``threads`` threads (best of many short 1024^3 products, so a
    moment when another process holds the cores does not lower it): fp32 (torch and ONNX Runtime) and
    bf16 (torch), in GFLOP/s. The denominator of ``fraction_of_peak``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        flops = 2.0 * n ** 3
        a32, b32 = torch.randn(n, n), torch.randn(n, n)
        fp32_torch = _best_gflops(lambda: torch.mm(a32, b32), flops)
        a16, b16 = a32.bfloat16(), b32.bfloat16()
        bf16_torch = _best_gflops(lambda: torch.mm(a16, b16), flops)
    finally:
        torch.set_num_threads(old)
    fp32_ort = _ort_gemm_gflops(threads, n)
    return {"fp32": max(fp32_torch, fp32_ort), "bf16": max(bf16_torch, fp32_torch),
            "fp32_torch": fp32_torch, "fp32_ort": fp32_ort, "bf16_torch": bf16_torch}


def _ort_gemm_gflops(threads: int, n: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    del onnx
    return _best_gflops(lambda: sess.run(None, {"a": a, "b": a}), 2.0 * n ** 3)
