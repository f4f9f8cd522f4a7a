"""What every int8 file shares, whichever quantizer made it: faceembed's metadata (the source's card and tags,
precision int8) and the per-output agreement with the float model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.inference.backends import OrtBackend


def tag_int8(model, source: str | Path) -> None:
    """Copy ``source``'s metadata (the model card included) onto ``model``, with precision int8."""
    import onnx

    src_meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    del model.metadata_props[:]
    for key, value in {**src_meta, "faceembed.precision": "int8"}.items():
        model.metadata_props.add(key=key, value=value)


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


def calibration_rows(model: str | Path, calibrate: str | Path | np.ndarray, max_images: int) -> tuple[Any, np.ndarray]:
    """The fp32 model's facts and at most ``max_images`` calibration rows of its item shape (an array, or tensor
    files); a model that is not fp32 or rows of another shape are one clear error."""
    from faceembed.errors import FaceembedError
    from faceembed.export.parity_inputs import check_items, load_tensor_input
    from faceembed.inference.backends import onnx_info

    info = onnx_info(model)
    if info.precision != "fp32":
        raise FaceembedError(f"quantize needs an fp32 model, {model} is {info.precision}")
    x = calibrate if isinstance(calibrate, np.ndarray) else load_tensor_input(calibrate, info.item_shape, max_images)
    return info, check_items(np.ascontiguousarray(x[:max_images], dtype=np.float32), info.item_shape,
                             "calibration inputs")
