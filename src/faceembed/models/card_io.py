"""Model cards in files: ONNX metadata (``faceembed.card``), faceembed's export metadata and checkpoints.

Kept apart from :mod:`faceembed.models.card` (the dataclasses) so that reading a card's JSON needs neither onnx nor
torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from faceembed.errors import FaceembedError, InputFormatError, MissingInputError
from faceembed.models.card import _ROLE_OF_NAME, NO_CARD_HINT, ONNX_KEY, ModelCard, _is_int, card_from_input_spec
from faceembed.models.checkpoint import InputSpec


def card_to_onnx(model: Any, card: ModelCard) -> None:
    """Store ``card`` as JSON in ``model.metadata_props["faceembed.card"]`` (replacing an older one)."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key != ONNX_KEY]
    del model.metadata_props[:]
    for key, value in (*keep, (ONNX_KEY, card.to_json())):
        model.metadata_props.add(key=key, value=value)


def load_onnx(path: str | Path) -> Any:
    """``onnx.load`` with faceembed's errors (missing file, not an ONNX model)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("model not found", path)
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputFormatError(f"not an ONNX model ({first[:160]})", path) from None


def _metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def card_from_onnx(path_or_model: Any) -> ModelCard | None:
    """The card in an ONNX model's (or file's) metadata, or None when it has none."""
    model = load_onnx(path_or_model) if isinstance(path_or_model, str | Path) else path_or_model
    text = _metadata(model).get(ONNX_KEY)
    if text is None:
        return None
    try:
        return ModelCard.from_json(text)
    except InputFormatError as exc:
        where = path_or_model if isinstance(path_or_model, str | Path) else None
        raise InputFormatError(f"metadata {ONNX_KEY!r}: {exc.message}", where) from None


def _graph_embedding_size(model: Any, output_name: str) -> int | None:
    for out in model.graph.output:
        if out.name == output_name:
            dims = out.type.tensor_type.shape.dim
            if len(dims) >= 2 and all(d.HasField("dim_value") for d in dims[1:]):
                return int(math.prod(d.dim_value for d in dims[1:]))
    return None


def card_from_export_metadata(model: Any, path: str | Path) -> ModelCard | None:
    """The card derived from faceembed's export metadata (``faceembed.input``), or None without it."""
    path = Path(path)
    meta = _metadata(model)
    if "faceembed.input" not in meta:
        return None
    try:
        spec = InputSpec.from_dict(json.loads(meta["faceembed.input"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFormatError(f"metadata 'faceembed.input' is not an input spec ({exc})", path) from None
    out = next((n for n in spec.output_names if _ROLE_OF_NAME.get(n) in ("embedding", "mu")), None)
    size = _graph_embedding_size(model, out) if out else None
    if size is None:
        raise InputFormatError(f"{NO_CARD_HINT} (the embedding output's size is not in the graph)", path)
    return card_from_input_spec(spec, meta.get("faceembed.arch"), size, name=path.stem, source=path.name)


def _card_from_checkpoint(path: Path) -> ModelCard:
    from faceembed.models.checkpoint import read_header

    payload = read_header(path)  # torch-free after the file's first read
    extra = payload.get("extra", {})
    if "card" in extra:
        try:
            return ModelCard.from_dict(extra["card"])
        except InputFormatError as exc:
            raise InputFormatError(f"extra['card']: {exc.message}", path) from None
    spec = InputSpec.from_dict(payload["input"])
    size = payload["config"].get("embedding_size")
    if not _is_int(size) or "embedding" not in spec.output_names:
        size = _run_checkpoint_for_size(path, spec)
    return card_from_input_spec(spec, payload["arch"], size, name=path.stem, source=extra.get("source"))


def _run_checkpoint_for_size(path: Path, spec: InputSpec) -> int:
    import torch

    from faceembed.models.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(path)
    names = list(spec.output_names)
    idx = next((i for i, n in enumerate(names) if _ROLE_OF_NAME.get(n) in ("embedding", "mu")), None)
    if idx is None:
        raise InputFormatError(f"{NO_CARD_HINT} (no output named 'embedding' or 'mu' in {names})", path)
    with torch.inference_mode():
        outs = model(torch.zeros(2, spec.channels, spec.height, spec.width))
    outs = outs if isinstance(outs, tuple | list) else (outs,)
    return int(math.prod(outs[idx].shape[1:]))


def read_card(path: str | Path) -> ModelCard:
    """The card of a model file: an ONNX file's ``faceembed.card`` metadata, else the card derived from
    faceembed's export metadata (``faceembed.input``); a faceembed checkpoint's ``extra["card"]``, else the
    card derived from its input spec. A file without either raises InputFormatError (how to add a card).
    ``path`` may be a model name (:func:`faceembed.models.registry.resolve_model`)."""
    from faceembed.models.registry import resolve_model

    path = resolve_model(path)
    if not path.is_file():
        raise MissingInputError("model not found", path)
    if path.suffix.lower() == ".onnx":
        model = load_onnx(path)
        card = card_from_onnx(model) or card_from_export_metadata(model, path)
        if card is None:
            raise InputFormatError(NO_CARD_HINT, path)
        return card
    try:
        return _card_from_checkpoint(path)
    except InputFormatError:
        raise
    except FaceembedError as exc:
        raise InputFormatError(f"{NO_CARD_HINT} ({exc.message})", path) from None


def write_card(path: str | Path, card: ModelCard) -> None:
    """Replace the card stored in a model file (an ``.onnx`` file's metadata, a checkpoint's ``extra["card"]``),
    atomically; the weights are untouched."""
    from faceembed.files import write_with

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnx

        model = load_onnx(path)
        card_to_onnx(model, card)
        write_with(path, lambda tmp: onnx.save(model, str(tmp)))
        return
    import torch

    from faceembed.models.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    payload["extra"] = {**payload.get("extra", {}), "card": card.to_dict()}
    write_with(path, lambda tmp: torch.save(payload, tmp))


def model_card_report(model: str | Path) -> dict[str, Any]:
    """``faceembed card``: the card as JSON; for a built-in model also ``calibration``: ``"shipped"`` or the file
    of the user's calibration (``faceembed calibrate --model NAME --reset`` removes it)."""
    from faceembed.models.registry import builtin_of
    from faceembed.models.user_calibration import calibration_of

    report = read_card(model).to_dict()
    name = builtin_of(model)
    if name is not None:
        report["calibration"] = calibration_of(name)
    return report
