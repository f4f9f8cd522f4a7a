"""``faceembed quantize``: static int8 quantization (QDQ, per-channel weights) calibrated on real inputs.

Activations are uint8 and weights int8 (ONNX Runtime's recommended U8S8 on x86; VNNI runs it natively);
the result runs on ONNX Runtime and OpenVINO. The report compares the int8 outputs with the fp32 ones on the
calibration inputs (cosine per row for embeddings, relative error for ``sigma_sq``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.export.parity_inputs import load_tensor_input
from faceembed.files import atomic_path
from faceembed.runtime.backends import OrtBackend, onnx_info

METHODS = ("minmax", "percentile", "entropy")


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over an in-memory array, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 16):
        self.batches = iter([{name: np.ascontiguousarray(x[i:i + batch])} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_model(model: str | Path, calibrate: str | Path | np.ndarray, out: str | Path,
                   max_images: int = 256, method: str = "minmax", per_channel: bool = True) -> dict[str, Any]:
    """Quantize ``model`` (fp32 ONNX) to int8 QDQ calibrated on ``calibrate`` (tensor folder, .npy or array)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info = onnx_info(model)
    if info.precision != "fp32":
        raise FaceembedError(f"quantize needs an fp32 model, {model} is {info.precision}")
    if method not in METHODS:
        raise FaceembedError(f"--method must be one of {', '.join(METHODS)}")
    x = calibrate if isinstance(calibrate, np.ndarray) else load_tensor_input(calibrate, info.item_shape, max_images)
    x = np.ascontiguousarray(x[:max_images], dtype=np.float32)
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as final_tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(final_tmp), _Reader(info.input_name, x), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib, extra_options={"CalibTensorRangeSymmetric": False})
        _tag_int8(final_tmp, model)
        report = compare_outputs(model, final_tmp, x[:64])
    report.update({"calibration_images": int(len(x)), "method": method, "per_channel": per_channel,
                   "format": "QDQ U8S8", "out": str(out)})
    return report


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs every tensor it calibrates; keep the terminal readable."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _tag_int8(path: Path, source: str | Path) -> None:
    import onnx

    src_meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in {**src_meta, "faceembed.precision": "int8"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def compare_outputs(reference: str | Path, candidate: str | Path, x: np.ndarray) -> dict[str, Any]:
    """Per-output agreement of ``candidate`` with ``reference`` on ``x`` (both run by ONNX Runtime)."""
    ref = OrtBackend(reference).run(x)
    cand_backend = OrtBackend(candidate)
    got = cand_backend.run(x)
    out: dict[str, Any] = {}
    for name, a, b in zip(cand_backend.output_names, got, ref, strict=True):
        a64, b64 = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
        if name == "sigma_sq":
            out[name] = {"max_rel_error": float(np.max(np.abs(a64 - b64) / np.maximum(np.abs(b64), 1e-12)))}
        else:
            cos = (a64 * b64).sum(1) / np.maximum(np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1), 1e-12)
            out[name] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    return {"agreement": out, "agreement_json": json.dumps(out)}
