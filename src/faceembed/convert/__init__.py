"""Bring foreign models into faceembed: read what the graph tells, take the rest from the user's flags, prove
the resulting model card by running the model, and write the model with its card (``convert.onnx_model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError, MissingInputError

#: Flags that describe a graph's input and outputs: they apply to ONNX and TensorFlow files, not to PyTorch
#: state dicts (whose architecture fixes them).
CARD_FLAGS = ("layout", "color", "mean", "std", "template", "size", "embedding")


def source_kind(src: Path) -> str:
    """``onnx``, ``tensorflow`` (a frozen ``.pb`` or a SavedModel folder) or ``torch`` (a state dict file)."""
    if src.is_dir():
        if (src / "saved_model.pb").is_file():
            return "tensorflow"
        raise FaceembedError("a folder can only be a TensorFlow SavedModel (with saved_model.pb)", src)
    if not src.is_file():
        raise MissingInputError("model to import not found", src)
    return {".onnx": "onnx", ".pb": "tensorflow"}.get(src.suffix.lower(), "torch")


def import_model(src: str | Path, dst: str | Path, *, arch: str | None = None, trust_pickle: bool = False,
                 inputs: str | None = None, outputs: str | None = None, **card_flags: Any) -> dict[str, Any]:
    """``faceembed import``: bring ``src`` (ONNX, TensorFlow frozen graph / SavedModel, PyTorch state dict of a
    known ``arch``) into faceembed as ``dst`` with its model card; a bare name (no folder, no suffix) puts it in
    the cache, usable by that name. Returns ``{"kind", "destination", "card"}`` (and the state dict's summary
    for PyTorch)."""
    from faceembed.models.registry import check_new_name, is_model_name, models_dir

    src, dst = Path(src), Path(dst)
    kind = source_kind(src)
    if is_model_name(dst):  # a bare name: the model goes into the cache, usable by name from then on
        check_new_name(str(dst))
        dst = models_dir() / f"{dst}{'.pt' if kind == 'torch' else '.onnx'}"
    given = {k: v for k, v in card_flags.items() if v is not None}
    if kind == "torch":
        wrong = [f"--{k}" for k in (*given, *(["inputs"] if inputs else []), *(["outputs"] if outputs else []))]
        if wrong:
            raise FaceembedError(f"{', '.join(wrong)} describe ONNX / TensorFlow graphs; a PyTorch state dict of a "
                                 "known --arch has its card already")
        from faceembed.convert.torch_state import import_checkpoint

        return {"kind": kind, **import_checkpoint(src, dst, arch or "mobilefacenet", trust_pickle=trust_pickle)}
    if dst.suffix.lower() != ".onnx":
        raise FaceembedError(f"--out must name an .onnx file for an imported {kind} model, not {dst.name!r}")
    if kind == "onnx":
        from faceembed.convert.onnx_model import import_onnx

        card = import_onnx(src, dst, inputs=inputs, outputs=outputs, arch=arch, **given)
    else:
        from faceembed.convert.onnx_model import parse_inputs
        from faceembed.convert.tensorflow import import_tensorflow, parse_tf_outputs

        if not inputs or not outputs:
            raise FaceembedError("a TensorFlow graph needs --inputs NAME:SHAPE (e.g. input_x:-1,28,28,1) and "
                                 "--outputs NAME[,NAME] (e.g. output:0)")
        card = import_tensorflow(src, dst, inputs=parse_inputs(inputs), outputs=parse_tf_outputs(outputs),
                                 arch=arch, **given)
    return {"kind": kind, "destination": str(dst), "card": card.to_dict()}
