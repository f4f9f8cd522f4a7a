"""Import foreign PyTorch state dicts (``torch.save`` files) of the known face backbones as faceembed checkpoints.

Files are read with ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which accepts tensors,
containers and plain values only. A file that needs a full unpickle (it references other classes or
functions) is refused unless the caller says it trusts the file (``trust_pickle=True``, ``--trust-pickle``):
a full unpickle can run code stored in the file.

Accepted payloads: a bare ``name -> tensor`` dict (arcface_torch's ``backbone.pth``), the MobileFaceNet port's
``{"epoch": E, "net_state_dict": sd}``, ``{"state_dict": sd}`` and arcface_torch's training checkpoints
``{"state_dict_backbone": sd, ...}``. ``DataParallel``'s ``module.`` prefixes are stripped, then the weights
are loaded strictly into the registered architecture and saved with the model card of that architecture in
``extra["card"]``.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceembed.errors import CheckpointError, MissingInputError
from faceembed.models import build
from faceembed.models.card import ModelCard, OutputSpec
from faceembed.models.checkpoint import InputSpec, save_checkpoint


@dataclasses.dataclass(frozen=True)
class ArchPreprocess:
    """How an architecture's published weights expect their input: crop size, colour, scaling, alignment."""

    height: int
    width: int
    mean: float
    std: float
    template: str
    color: str = "RGB"


SPHEREFACE_112x96 = ArchPreprocess(112, 96, mean=127.5, std=128.0, template="sphereface")
ARCFACE_112x112 = ArchPreprocess(112, 112, mean=127.5, std=127.5, template="arcface")

#: arch -> (constructor config, preprocessing of its published weights).
IMPORTABLE: dict[str, tuple[dict[str, Any], ArchPreprocess]] = {
    "mobilefacenet": ({"embedding_size": 128}, SPHEREFACE_112x96),
    "sphere20": ({"embedding_size": 512}, SPHEREFACE_112x96),
    "sphere64": ({"embedding_size": 512}, SPHEREFACE_112x96),
    **{name: ({"embedding_size": 512}, ARCFACE_112x112)
       for name in ("iresnet18", "iresnet34", "iresnet50", "iresnet100")},
}

TRUST_HINT = ("this file needs a full pickle load, which can run code from the file; "
              "rerun with --trust-pickle if you trust its source")
_STATE_KEYS = ("net_state_dict", "state_dict_backbone", "state_dict", "model_state_dict")
_META_KEYS = ("epoch", "iters", "step", "global_step")


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, without terminal escapes, at most 160 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _refused_global(exc: BaseException) -> str | None:
    """The global torch's weights-only unpickler refused (``'__main__.Foo'``), when its message names one."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def _looks_like_torch_file(src: Path) -> bool:
    """A zip archive (``torch.save`` since 1.6) or a pickle stream (protocol >= 2 starts with 0x80)."""
    with open(src, "rb") as f:
        head = f.read(1)
    return zipfile.is_zipfile(src) or head == b"\x80"


def load_torch_file(src: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` ``src`` on the CPU with the weights-only unpickler; a full unpickle only if trusted.

    Raises one-line CheckpointErrors: for bytes that are no torch file, and for a file needing a full unpickle
    when ``trust_pickle`` is false.
    """
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refusal = exc
    except Exception as exc:  # torch raises many types for corrupt or foreign bytes
        raise CheckpointError(f"cannot read checkpoint ({_first_line(exc)}); expected a torch.save file",
                              src) from None
    if not _looks_like_torch_file(src):
        raise CheckpointError("not a torch.save file (neither a zip archive nor a pickle stream)", src)
    if not trust_pickle:
        culprit = _refused_global(refusal)
        why = f" (it references {culprit}, outside torch's weights-only allow-list)" if culprit else ""
        raise CheckpointError(f"refused: {TRUST_HINT}{why}", src)
    try:
        return torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint even with a full pickle load ({_first_line(exc)})",
                              src) from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(payload: Any, src: str | Path = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict without ``module.`` prefixes, JSON-able metadata such as the epoch) of a loaded payload."""
    if isinstance(payload, dict) and payload.get("format") == "faceembed-checkpoint":
        raise CheckpointError("already a faceembed checkpoint; nothing to import", src)
    meta: dict[str, Any] = {}
    state = payload
    if isinstance(payload, dict) and not _is_state_dict(payload):
        key = next((k for k in _STATE_KEYS if isinstance(payload.get(k), dict)), None)
        if key is not None:
            state = payload[key]
            meta = {k: payload[k] for k in _META_KEYS if isinstance(payload.get(k), int | float | str)}
    if isinstance(state, nn.Module):  # a whole pickled module (only reachable with trust_pickle)
        state = state.state_dict()
    if not _is_state_dict(state):
        raise CheckpointError("no state dict found (expected a name -> tensor dict, or one under "
                              f"{', '.join(repr(k) for k in _STATE_KEYS)})", src)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return sd, meta


def _show(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


def check_fit(model: nn.Module, sd: dict[str, torch.Tensor], arch: str, src: str | Path = "") -> None:
    """One-line CheckpointError naming missing, unexpected and reshaped tensors, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    reshaped = [f"{k} {list(sd[k].shape)} vs {list(own[k].shape)}"
                for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(names)} {what}: {_show(names)}"
                for what, names in (("missing", missing), ("unexpected", unexpected), ("of other shapes", reshaped))
                if names]
    if problems:
        hint = f"; is it really a {arch}? known: {', '.join(IMPORTABLE)}"
        raise CheckpointError(f"weights do not fit {arch!r}: {'; '.join(problems)}{hint}", src)


def load_strict(arch: str, sd: dict[str, torch.Tensor], src: str | Path = "") -> nn.Module:
    """Build ``arch`` with its import config and load ``sd`` strictly (eval mode, float32 weights)."""
    model = build(arch, **IMPORTABLE[arch][0])
    check_fit(model, sd, arch, src)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit {arch!r}: {_first_line(exc)}", src) from None
    return model.eval()


def input_spec(arch: str, model: nn.Module) -> InputSpec:
    """The checkpoint's InputSpec (NHWC files, ``(pixel - mean) / std``) of an importable ``arch``."""
    pre = IMPORTABLE[arch][1]
    return InputSpec(pre.height, pre.width, 3, mean=pre.mean, scale=pre.std, color=pre.color,
                     input_name="input", output_names=tuple(model.output_names))


def model_card(arch: str, model: nn.Module, source: str | None = None) -> ModelCard:
    """The ModelCard of an imported ``arch``: NHWC (as faceembed exports it), scalar mean / std, cosine."""
    pre = IMPORTABLE[arch][1]
    names = tuple(model.output_names)
    return ModelCard(
        input_name="input", layout="NHWC", height=pre.height, width=pre.width, color=pre.color,
        mean=(pre.mean,), std=(pre.std,), template=pre.template, batch=None,
        outputs=tuple(OutputSpec(n, "embedding" if n == "embedding" else "other") for n in names),
        embedding_size=int(IMPORTABLE[arch][0]["embedding_size"]), similarity="cosine",
        arch=arch, name=arch, source=source,
    )


def import_state_dict(src: str | Path, dst: str | Path, arch: str, *, trust_pickle: bool = False) -> Path:
    """Convert the PyTorch state dict file ``src`` of ``arch`` into a faceembed checkpoint at ``dst``.

    ``arch``: one of ``IMPORTABLE`` (mobilefacenet, sphere20, sphere64, iresnet18/34/50/100). The checkpoint
    is written atomically; its ``extra`` holds ``card`` (the model card dict), ``source`` (file name) and the
    epoch/step when the file had one. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if arch not in IMPORTABLE:
        raise CheckpointError(f"cannot import arch {arch!r}; supported: {', '.join(IMPORTABLE)}")
    if not src.is_file():
        raise MissingInputError("checkpoint not found", src)
    sd, meta = extract_state_dict(load_torch_file(src, trust_pickle), src)
    model = load_strict(arch, sd, src)
    extra = {"source": src.name, **meta, "card": model_card(arch, model, source=src.name).to_dict()}
    save_checkpoint(dst, arch, dict(IMPORTABLE[arch][0]), model, input_spec(arch, model), extra=extra)
    return dst


def import_checkpoint(src: str | Path, dst: str | Path, arch: str = "mobilefacenet", *,
                      trust_pickle: bool = False) -> dict[str, Any]:
    """:func:`import_state_dict`, returning a JSON-able summary: arch, config, tensors, parameters, epoch (when
    known), source, destination, the model card."""
    from faceembed.models.checkpoint import load_checkpoint, read_checkpoint

    dst = import_state_dict(src, dst, arch, trust_pickle=trust_pickle)
    payload = read_checkpoint(dst)
    model, _, extra = load_checkpoint(dst)
    meta = {k: v for k, v in extra.items() if k in _META_KEYS}
    return {"arch": arch, "config": payload["config"], "source": str(src), "destination": str(dst),
            "tensors": len(payload["state_dict"]), "parameters": sum(p.numel() for p in model.parameters()),
            "card": extra["card"], **meta}
