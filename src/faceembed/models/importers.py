"""Convert foreign face-model checkpoints into faceembed's checkpoint format.

Supported: the common MobileFaceNet PyTorch port's ``torch.save({"epoch": E, "net_state_dict": sd})`` files
and bare state dicts (``DataParallel``'s ``module.`` prefixes are stripped), for ``mobilefacenet``,
``sphere20`` and ``sphere64``.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from faceembed.errors import CheckpointError, MissingInputError
from faceembed.models import build
from faceembed.models.checkpoint import FACE_INPUT_112x96, save_checkpoint

# Pixel order the imported weights expect. The MobileFaceNet port reads images with scipy/PIL (RGB), and a
# 10-fold LFW check agrees: RGB input gives a higher accuracy than BGR with the shipped CASIA weights.
IMPORT_CONFIGS: dict[str, dict[str, Any]] = {
    "mobilefacenet": {"embedding_size": 128},
    "sphere20": {"embedding_size": 512},
    "sphere64": {"embedding_size": 512},
}
IMPORT_COLOR: dict[str, str] = {"mobilefacenet": "RGB", "sphere20": "RGB", "sphere64": "RGB"}


def _load_foreign(src: Path) -> Any:
    """Load a foreign ``torch.save`` file, preferring the safe ``weights_only=True`` unpickler.

    Only if that refuses the file (old pickles may hold globals outside the allow-list) do we fall back to
    ``weights_only=False``, and only after checking it is a real torch file (zip archive or legacy pickle
    stream) rather than arbitrary bytes. A full unpickle can run code: import only files you trust.
    """
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        safe_error = exc
    except Exception as exc:  # corrupt or foreign bytes: report them as such
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint ({first[:160]})", src) from None
    with open(src, "rb") as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(src) or head[:1] == b"\x80"):
        raise CheckpointError(f"not a torch checkpoint ({str(safe_error).splitlines()[0][:160]})", src)
    try:
        return torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint ({first[:160]})", src) from None


def extract_state_dict(payload: Any, src: str | Path = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state dict without ``module.`` prefixes, metadata such as the epoch) from a loaded payload."""
    meta: dict[str, Any] = {}
    if isinstance(payload, dict) and payload.get("format") == "faceembed-checkpoint":
        raise CheckpointError("already a faceembed checkpoint; nothing to import", src)
    if isinstance(payload, dict) and "net_state_dict" in payload:
        for key in ("epoch", "iters", "step"):
            if isinstance(payload.get(key), int | float | str):
                meta[key] = payload[key]
        payload = payload["net_state_dict"]
    elif isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise CheckpointError("no state dict found (expected 'net_state_dict' or a name -> tensor dict)", src)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in payload.items()}
    return sd, meta


def load_strict(arch: str, config: dict[str, Any], sd: dict[str, torch.Tensor],
                src: str | Path = "") -> torch.nn.Module:
    """Build ``arch`` and load ``sd`` strictly; CheckpointError names missing/unexpected/mis-shaped keys."""
    model = build(arch, **config)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes: {show(shapes)}")
        raise CheckpointError(f"weights do not fit {arch!r}: " + "; ".join(parts), src)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def import_checkpoint(src: str | Path, dst: str | Path, arch: str = "mobilefacenet") -> dict[str, Any]:
    """Convert the foreign checkpoint ``src`` into a faceembed checkpoint at ``dst`` (written atomically).

    Returns a JSON-able summary: arch, config, tensors, parameters, epoch (when known), source, destination.
    """
    src, dst = Path(src), Path(dst)
    if arch not in IMPORT_CONFIGS:
        raise CheckpointError(f"cannot import arch {arch!r}; supported: {', '.join(sorted(IMPORT_CONFIGS))}")
    if not src.is_file():
        raise MissingInputError("checkpoint not found", src)
    sd, meta = extract_state_dict(_load_foreign(src), src)
    config = dict(IMPORT_CONFIGS[arch])
    model = load_strict(arch, config, sd, src)
    spec = dataclasses.replace(FACE_INPUT_112x96, color=IMPORT_COLOR[arch], output_names=model.output_names)
    extra = {"source": src.name, **meta}
    save_checkpoint(dst, arch, config, model, spec, extra=extra)
    return {
        "arch": arch,
        "config": config,
        "source": str(src),
        "destination": str(dst),
        "tensors": len(sd),
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_elements": sum(v.numel() for v in sd.values()),
        "input": spec.to_dict(),
        **meta,
    }
