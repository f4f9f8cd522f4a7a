"""Export a faceembed checkpoint to ONNX (dynamic batch, named NHWC input and named outputs), then check
parity against PyTorch on real inputs before the file appears under its final name.

``fp16=True`` computes in float16 inside the graph but keeps float32 inputs and outputs, so the same tensor
files serve both precisions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from faceembed.errors import ParityError
from faceembed.files import atomic_path
from faceembed.models.checkpoint import InputSpec, load_checkpoint
from faceembed.models.to_onnx import torch_to_onnx

PARITY_BATCHES = (1, 4, 8, 16, 32)
# Tolerances on max |onnx - torch| / max(1, max |torch|), per precision; outputs named "sigma_sq" span
# 1e-4..1e-1, so they are compared by relative error instead.
ABS_TOL = {"fp32": 1e-4, "fp16": 3e-2}
REL_TOL = {"fp32": 1e-3, "fp16": 5e-2}
RELATIVE_OUTPUTS = ("sigma_sq",)


class NHWCWrapper(nn.Module):
    """Takes the files' NHWC layout, optionally computes in float16, returns float32 outputs."""

    def __init__(self, model: nn.Module, fp16: bool = False):
        super().__init__()
        self.model = model.half() if fp16 else model
        self.fp16 = fp16

    def forward(self, x: torch.Tensor):
        x = x.permute(0, 3, 1, 2)
        if self.fp16:
            x = x.half()
        outputs = self.model(x)
        return tuple(o.float() if o.is_floating_point() else o for o in outputs)


@dataclass
class ParityReport:
    """Max deviations of the exported model from PyTorch fp32, per batch size and output."""

    precision: str
    batches: list[int]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    max_rel_diff: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    ok: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    parity_inputs: np.ndarray,
    fp16: bool = False,
    opset: int = 17,
    batches: Sequence[int] = PARITY_BATCHES,
) -> ParityReport:
    """Export ``checkpoint`` to ``out`` and check it against PyTorch on ``parity_inputs`` (NHWC float32).

    Raises ParityError (and leaves nothing at ``out``) when a deviation passes the tolerance.
    """
    model, spec, _ = load_checkpoint(checkpoint)
    arch = _arch_of(checkpoint)
    precision = "fp16" if fp16 else "fp32"
    need = max(batches)
    if len(parity_inputs) < need:
        reps = -(-need // len(parity_inputs))
        parity_inputs = np.concatenate([parity_inputs] * reps)
    parity_inputs = np.ascontiguousarray(parity_inputs[:need], dtype=np.float32)
    reference = _torch_outputs(model, parity_inputs)
    export_model = NHWCWrapper(load_checkpoint(checkpoint)[0], fp16=fp16).eval()
    with atomic_path(out) as tmp:
        _torch_export(export_model, spec, tmp, opset)
        _tag(tmp, spec, arch, precision, checkpoint)
        report = check_parity(tmp, spec, parity_inputs, reference, precision, batches)
        if not report.ok:
            raise ParityError(
                f"exported {precision} model deviates from PyTorch beyond tolerance: "
                f"{json.dumps(report.max_abs_diff)} (rel {json.dumps(report.max_rel_diff)})",
                out,
            )
    return report


def _arch_of(checkpoint: str | Path) -> str:
    from faceembed.models.checkpoint import read_checkpoint

    return read_checkpoint(checkpoint)["arch"]


def _torch_outputs(model: nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        outs = NHWCWrapper(model).eval()(torch.from_numpy(inputs))
    return [o.numpy() for o in outs]


def _torch_export(model: nn.Module, spec: InputSpec, path: Path, opset: int) -> None:
    torch_to_onnx(model, torch.zeros(2, *spec.nhwc), path, spec.input_name, spec.output_names, {0: "batch"}, opset)


def _tag(path: Path, spec: InputSpec, arch: str, precision: str, checkpoint: str | Path) -> None:
    """Record faceembed's metadata (precision, architecture, input spec) and the checkpoint's model card (NHWC,
    dynamic batch: what the export takes) in the ONNX file."""
    import onnx

    from faceembed.models.card_io import card_to_onnx, read_card

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {
        "faceembed.precision": precision,
        "faceembed.arch": arch,
        "faceembed.input": json.dumps(spec.to_dict()),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    card = read_card(checkpoint).replace(layout="NHWC", batch=None, input_name=spec.input_name,
                                         source=Path(checkpoint).name)
    card_to_onnx(model, card)
    onnx.save(model, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def check_parity(
    path: Path,
    spec: InputSpec,
    inputs: np.ndarray,
    reference: list[np.ndarray],
    precision: str,
    batches: Sequence[int],
) -> ParityReport:
    """Run the ONNX file with ONNX Runtime at each batch size and compare with the PyTorch outputs."""
    from faceembed.inference.backends import OrtBackend

    backend = OrtBackend(path, threads=None)
    report = ParityReport(precision, list(batches))
    for name in spec.output_names:
        report.max_abs_diff[name] = 0.0
        report.max_rel_diff[name] = 0.0
    for b in batches:
        outs = backend.run(inputs[:b])
        for name, got, ref in zip(spec.output_names, outs, reference, strict=True):
            ref = ref[:b]
            if got.shape != ref.shape:
                raise ParityError(
                    f"output {name!r} has shape {list(got.shape)}, PyTorch gives {list(ref.shape)}", path
                )
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            scale = max(1.0, float(np.abs(ref).max()))
            rel = diff / np.maximum(np.abs(ref.astype(np.float64)), 1e-12)
            report.max_abs_diff[name] = max(report.max_abs_diff[name], float(diff.max()) / scale)
            report.max_rel_diff[name] = max(report.max_rel_diff[name], float(rel.max()))
    for name in spec.output_names:
        if name in RELATIVE_OUTPUTS:
            report.tolerance[name] = REL_TOL[precision]
            report.ok &= report.max_rel_diff[name] <= REL_TOL[precision]
        else:
            report.tolerance[name] = ABS_TOL[precision]
            report.ok &= report.max_abs_diff[name] <= ABS_TOL[precision]
    return report
