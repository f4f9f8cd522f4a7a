"""``faceembed export``: a checkpoint (or a model name) to ONNX, with the parity check on real inputs, and the
export that ``quantize`` makes first when it is given a checkpoint."""

from __future__ import annotations

from pathlib import Path

from faceembed.export.onnx_export import ParityReport, export_onnx
from faceembed.export.parity_inputs import default_parity_inputs, load_tensor_input
from faceembed.models.checkpoint import InputSpec, read_checkpoint


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fp16: bool = False,
    parity_input: str | Path | None = None,
    opset: int = 17,
) -> ParityReport:
    """``faceembed export``: export with a parity check on real inputs (given, or the model's default);
    ``checkpoint`` may be a model name (``dlib-resnet``)."""
    from faceembed.models.registry import resolve_model

    checkpoint = resolve_model(checkpoint)
    spec = InputSpec.from_dict(read_checkpoint(checkpoint)["input"])
    if parity_input is not None:
        inputs = load_tensor_input(parity_input, spec.nhwc)
    else:
        from faceembed.models.card_io import read_card

        inputs = default_parity_inputs(spec, read_card(checkpoint))
    return export_onnx(checkpoint, out, inputs, fp16=fp16, opset=opset)
