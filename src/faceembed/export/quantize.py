"""``faceembed quantize``: static int8 quantization (QDQ, per-channel weights) calibrated on real inputs.

Activations are uint8 and weights int8 (ONNX Runtime's recommended U8S8 on x86; VNNI runs it natively);
the result runs on ONNX Runtime and OpenVINO. Two schemes:

- ``residual-float`` (default): only convolutions and matrix products read int8; everything between them,
  the residual additions above all, stays float (``qdq_graph.float_skip_paths``). Then, when the first output's
  cosine to fp32 on held-out calibration images is below ``min_cosine``, the layers whose int8 costs the most
  are put back to float one at a time (ranked by measuring each alone) until it is not. Fast on OpenVINO.
- ``full``: every operator ONNX Runtime can quantize reads and writes int8 (its default). ONNX Runtime fuses it
  into integer kernels, so it is the faster scheme there, and the less accurate one.

The report compares the int8 outputs with the fp32 ones on the held-out images (cosine per row for
embeddings, relative error for ``sigma_sq``) and lists the layers kept in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.export.int8_files import calibration_rows, compare_outputs, tag_int8
from faceembed.export.qdq_graph import LAYER_OPS, float_skip_paths, quantized_layers, restore_float
from faceembed.files import atomic_path

METHODS = ("minmax", "percentile", "entropy")
SCHEMES = ("residual-float", "full")
# The float-layer search aims at half the cosine loss that bench and --backend auto accept (0.999): the
# smallest cosine over a fresh set of images as large as the held-out one falls below the held-out minimum
# about half the time, so aiming at the acceptance bar itself would fail that check about half the time.
SEARCH_MIN_COSINE = 0.9995


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over an in-memory array, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int | None = None):
        """``batch``: the graph's fixed batch (rows that do not fill a last batch are left out), else 16."""
        step = batch or 16
        ends = range(step, len(x) + 1, step) if batch else range(step, len(x) + step, step)
        self.batches = iter([{name: np.ascontiguousarray(x[e - step:e])} for e in ends])

    def get_next(self):
        return next(self.batches, None)


def onnx_to_quantize(model: str | Path, calibrate: str | Path | np.ndarray, out: str | Path) -> Path:
    """The fp32 ONNX file to quantize: ``model`` itself, or for a checkpoint (or a built-in / imported model that
    is one) its export ``OUT.fp32.onnx``, made once and parity-checked on the calibration inputs."""
    from faceembed.errors import MissingInputError
    from faceembed.models.registry import resolve_model

    path = resolve_model(model)
    if not path.is_file():
        raise MissingInputError("model file not found", path)
    if path.suffix.lower() == ".onnx":
        return path
    exported = Path(out).with_suffix(".fp32.onnx")
    if not exported.is_file() or exported.stat().st_mtime < path.stat().st_mtime:
        from faceembed.export.export_model import export_checkpoint

        parity = calibrate if not isinstance(calibrate, np.ndarray) else None
        export_checkpoint(path, exported, parity_input=parity)
    return exported


def quantize_model(model: str | Path, calibrate: str | Path | np.ndarray, out: str | Path,
                   max_images: int = 256, method: str = "minmax", per_channel: bool = True,
                   scheme: str = "residual-float", min_cosine: float | None = SEARCH_MIN_COSINE,
                   holdout: float = 0.25, progress: bool = False) -> dict[str, Any]:
    """Quantize ``model`` (fp32 ONNX) to int8 QDQ calibrated on ``calibrate`` (tensor folder, .npy or array).

    With ``scheme="residual-float"`` and ``min_cosine``, a ``holdout`` fraction of the calibration images
    (at least 16) is kept out of calibration to check the result and choose the layers kept in float.
    ``method="nncf"``: NNCF places and calibrates the quantizers instead (``scheme`` and ``per_channel`` do not
    apply), with its accuracy control aiming at ``min_cosine`` (see ``quantize_nncf``).

    ``model`` may be a model name (``dlib-resnet``) or a faceembed checkpoint: it is exported to ONNX first
    (``OUT.fp32.onnx``, parity-checked on the calibration inputs) and that file is quantized.
    """
    model = onnx_to_quantize(model, calibrate, out)
    if method == "nncf":
        from faceembed.export.quantize_nncf import quantize_nncf

        return quantize_nncf(model, calibrate, out, max_images=max_images, min_cosine=min_cosine or SEARCH_MIN_COSINE,
                             accuracy_control=bool(min_cosine), holdout=holdout, progress=progress)
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise FaceembedError(f"--method must be one of {', '.join(METHODS)}")
    if scheme not in SCHEMES:
        raise FaceembedError(f"--scheme must be one of {', '.join(SCHEMES)}")
    info, x = calibration_rows(model, calibrate, max_images)
    n_check = max(16, int(len(x) * holdout)) if scheme == "residual-float" and min_cosine else 0
    if len(x) - n_check < 16:
        n_check = 0  # too few images to hold some out: calibrate on all, no float-layer search
    calib, check = (x[:-n_check], x[-n_check:]) if n_check else (x, x[:64])
    calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as final_tmp, _quiet():
        pre, raw = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        reader = _Reader(info.input_name, calib, info.fixed_batch)  # calibrate in the model's own batch
        quantize_static(str(pre), str(raw), reader, quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib_method, **_scheme_options(scheme))
        qmodel = onnx.load(str(raw))
        search: dict[str, Any] = {}
        if scheme == "residual-float":
            float_skip_paths(qmodel)
            if n_check:
                qmodel, search = keep_float_until(qmodel, onnx.load(str(pre)), check, min_cosine, progress)
        tag_int8(qmodel, model)
        onnx.save(qmodel, str(final_tmp))
        report = compare_outputs(model, final_tmp, check[:64])
    report.update({"calibration_images": int(len(calib)), "holdout_images": int(n_check), "method": method,
                   "per_channel": per_channel, "scheme": scheme, "format": "QDQ U8S8", "out": str(out), **search})
    return report


def _scheme_options(scheme: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"CalibTensorRangeSymmetric": False}
    if scheme == "full":
        return {"extra_options": extra}
    extra["OpTypesToExcludeOutputQuantization"] = list(LAYER_OPS)
    return {"op_types_to_quantize": list(LAYER_OPS), "extra_options": extra}


def keep_float_until(qmodel, float_model, x: np.ndarray, min_cosine: float,
                     progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """Put the layers whose int8 costs the most back to float until the first output's cosine to fp32 is
    >= ``min_cosine`` on every row of ``x``. Each layer is ranked by the mean cosine gained by restoring it
    alone. Returns (model, {"int8_layers", "float_layers", "search_min_cosine"})."""
    from rich.progress import Progress

    from faceembed.evaluation.scores import cosine_scores

    reference = _run_first_output(float_model, x)

    def cosines(m) -> np.ndarray:
        return cosine_scores(_run_first_output(m, x), reference)

    layers = quantized_layers(qmodel)
    restored: list[str] = []
    cos = cosines(qmodel)
    if cos.min() < min_cosine and layers:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("rank int8 layers", total=len(layers))
            gain = {}
            for name in layers:
                gain[name] = cosines(restore_float(qmodel, float_model, [name])).mean()
                bar.advance(task)
            bar.update(task, description="restore float layers", completed=0)
            for name in sorted(layers, key=lambda n: -gain[n]):
                restored.append(name)
                candidate = restore_float(qmodel, float_model, restored)
                cos = cosines(candidate)
                bar.advance(task)
                if cos.min() >= min_cosine:
                    break
        qmodel = candidate
    return qmodel, {"int8_layers": len(layers) - len(restored), "float_layers": restored,
                    "search_min_cosine": float(cos.min())}


def _run_first_output(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from faceembed.inference.backends import run_in_fixed_batches

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
    out = [run_in_fixed_batches(lambda b: session.run(None, {first.name: b}), x[i:i + 32], fixed)[0]
           for i in range(0, len(x), 32)]
    return np.concatenate(out).reshape(len(x), -1).astype(np.float64)


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



