"""``faceembed quantize --method nncf``: int8 with NNCF (OpenVINO's post-training quantizer) on the fp32 ONNX file.

NNCF places the quantizers itself (its CPU hardware config: convolution / matmul inputs and the eltwise ops
OpenVINO runs in int8), calibrates on the same real inputs as ``faceembed quantize`` (min-max statistics,
fast bias correction), and writes QDQ ONNX: ONNX Runtime and OpenVINO run it, and faceembed's model card
metadata is copied over with ``faceembed.precision = int8``.

With ``accuracy_control`` it runs ``nncf.quantize_with_accuracy_control``: the validation metric is the
*minimum* (not a quantile) over held-out rows of the first output's cosine to fp32 -- the statistic
``quantize``'s own float-layer search and bench's acceptance check use -- and ``max_drop = 1 - min_cosine``
(absolute; fp32 scores 1.0), so NNCF puts its most harmful quantizer groups back to float until that minimum
is at least ``min_cosine``. Held out: ``validation`` when given, else a quarter of the calibration rows.

Overflow fix: NNCF by default narrows the first layer's weights to 7 bits, because CPUs without VNNI multiply
u8 x s8 pairs with ``vpmaddubsw``, whose int16 sums can saturate. VNNI's ``vpdpbusd`` accumulates straight
into int32 and cannot, so on a VNNI CPU (this project's machine) ``overflow_fix="auto"`` disables it and keeps
the full 8-bit weight range; without VNNI it keeps NNCF's default (first layer only).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.export.int8_files import calibration_rows, compare_outputs, tag_int8
from faceembed.export.parity_inputs import check_items
from faceembed.export.qdq_graph import LAYER_OPS
from faceembed.files import atomic_path

# ops NNCF quantizes through: a layer reading Reshape(DequantizeLinear(...)) reads int8 (OpenVINO moves the pair)
_AGNOSTIC = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "MaxPool")
OVERFLOW_FIXES = ("auto", "enable", "first_layer_only", "disable")
PRESETS = ("mixed", "performance")


def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot product accumulating into int32 (AVX512-VNNI, AVX-VNNI or AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def quantize_nncf(model: str | Path, calibrate: str | Path | np.ndarray, out: str | Path, *,
                  max_images: int = 256, min_cosine: float = 0.9995, accuracy_control: bool = True,
                  validation: np.ndarray | None = None, holdout: float = 0.25, overflow_fix: str = "auto",
                  preset: str = "mixed", progress: bool = False) -> dict[str, Any]:
    """Quantize ``model`` (fp32 ONNX) with NNCF, calibrated on ``calibrate`` (tensor folder, .npy or array), and
    write int8 QDQ ONNX to ``out``. Returns the report: int8 / float layer counts, the held-out min cosine of
    the first output to fp32 (ONNX Runtime), whether it reached ``min_cosine``, and the seconds taken.

    ``preset="mixed"``: symmetric per-channel int8 weights, asymmetric activations (what ``quantize``'s U8S8
    does; PReLU outputs are not centred); ``"performance"``: symmetric activations too."""
    import onnx

    start = time.perf_counter()
    if overflow_fix not in OVERFLOW_FIXES:
        raise FaceembedError(f"overflow_fix must be one of {', '.join(OVERFLOW_FIXES)}")
    if preset not in PRESETS:
        raise FaceembedError(f"preset must be one of {', '.join(PRESETS)}")
    info, x = calibration_rows(model, calibrate, max_images)
    if validation is not None:
        calib = x
        check = check_items(np.ascontiguousarray(validation, dtype=np.float32), info.item_shape, "validation inputs")
    else:
        n_check = max(16, int(len(x) * holdout)) if accuracy_control else 0
        if len(x) - n_check < 16:
            n_check = 0  # too few rows to hold some out: calibrate on all, no accuracy control
        calib, check = (x[:-n_check], x[-n_check:]) if n_check else (x, x[:64])
    controlled = accuracy_control and (validation is not None or len(check) < len(x))
    step = info.fixed_batch or 1
    fix = ("disable" if cpu_has_vnni() else "first_layer_only") if overflow_fix == "auto" else overflow_fix

    float_model = onnx.load(str(model))
    with _nncf_quiet(progress):
        qmodel = _run_nncf(float_model, info, calib, check, step, fix, preset, controlled, min_cosine)
    layers = int8_layers(qmodel)
    float_layers = [n.name for n in qmodel.graph.node if n.op_type in LAYER_OPS and n.name not in set(layers)]

    tag_int8(qmodel, model)
    with atomic_path(out) as final_tmp:
        onnx.save(qmodel, str(final_tmp))
        report = compare_outputs(model, final_tmp, check)
    first = report["agreement"][info.output_names[0]]
    held_out = first.get("min_cosine")
    report.update({
        "method": "nncf", "format": "QDQ (NNCF)", "preset": preset, "overflow_fix": fix,
        "fast_bias_correction": True, "accuracy_control": controlled, "max_drop": 1.0 - min_cosine,
        "validation_metric": "min cosine of the first output to fp32 over the held-out rows",
        "calibration_images": int(len(calib)), "holdout_images": int(len(check)) if controlled else 0,
        "int8_layers": len(layers), "float_layers": float_layers, "float_layer_count": len(float_layers),
        "holdout_min_cosine": held_out, "reached": bool(held_out is not None and held_out >= min_cosine),
        "seconds": round(time.perf_counter() - start, 2), "out": str(out),
    })
    return report


def int8_layers(model) -> list[str]:
    """Conv / Gemm / MatMul nodes whose activation comes from a DequantizeLinear (through quantize-agnostic ops
    such as Reshape) and whose weight is dequantized int8, in graph order."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def dequantized(tensor: str, through: bool) -> bool:
        node = producer.get(tensor)
        while through and node is not None and node.op_type in _AGNOSTIC:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS and len(n.input) > 1
            and dequantized(n.input[0], True) and dequantized(n.input[1], False)]


def _run_nncf(float_model, info, calib: np.ndarray, check: np.ndarray, step: int, overflow_fix: str,
              preset: str, controlled: bool, min_cosine: float):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    name = info.input_name
    calib_items = [calib[i:i + step] for i in range(0, len(calib) - step + 1, step)]
    calibration = nncf.Dataset(calib_items, lambda item: {name: np.ascontiguousarray(item)})
    common = {
        "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "target_device": nncf.TargetDevice.CPU, "subset_size": len(calib_items), "fast_bias_correction": True,
    }
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    if not controlled:
        return nncf.quantize(float_model, calibration, advanced_parameters=advanced, **common)
    reference = _first_output(float_model, name, check, step)
    items = [(check[i:i + step], reference[i:i + step]) for i in range(0, len(check) - step + 1, step)]
    validation = nncf.Dataset(items, lambda item: {name: np.ascontiguousarray(item[0])})
    return nncf.quantize_with_accuracy_control(
        float_model, calibration, validation, _min_cosine_fn(name), max_drop=1.0 - min_cosine,
        drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **common)


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _first_output(model, name: str, x: np.ndarray, step: int) -> np.ndarray:
    session = _session(model)
    rows = [session.run(None, {name: np.ascontiguousarray(x[i:i + step])})[0]
            for i in range(0, len(x) - step + 1, step)]
    return np.concatenate(rows).reshape(len(rows) * step, -1).astype(np.float64)


def _min_cosine_fn(name: str):
    """NNCF's validation function: (min over rows of the first output's cosine to fp32, per-item minima)."""

    def validate(model, items) -> tuple[float, list[float]]:
        session = _session(model)
        per_item = []
        for x, ref in items:
            got = session.run(None, {name: np.ascontiguousarray(x)})[0].reshape(len(x), -1).astype(np.float64)
            cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
            per_item.append(float(cos.min()))
        return min(per_item), per_item

    return validate


@contextlib.contextmanager
def _nncf_quiet(progress: bool):
    """NNCF logs every step at INFO and draws progress bars on stdout: keep the terminal readable (its bars go to
    stderr with ``progress``, so stdout keeps only the report)."""
    import io
    import sys

    from nncf.common.logging.logger import nncf_logger, set_log_level

    level = nncf_logger.level
    set_log_level(logging.WARNING if progress else logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            yield
    finally:
        set_log_level(level)
