"""faceembed's checkpoint format (docs/formats.md): one ``torch.save`` dict readable with
``weights_only=True``::

    {"format": "faceembed-checkpoint", "version": 1,
     "arch": "mnist_classifier", "config": {...constructor kwargs...},
     "input": InputSpec as a dict, "state_dict": {...}, "extra": {...JSON-able...}}

torch is imported by the functions that read, write or build a checkpoint, not by this module: the input spec
here is also what ONNX Runtime / OpenVINO paths read from a model card, and they need no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceembed.errors import CheckpointError, MissingInputError
from faceembed.files import write_with
from faceembed.models import build

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "faceembed-checkpoint"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How raw pixels become the model's input tensor, and what the exported model is called with.

    Files and exported models use NHWC (the reference workflow's layout); PyTorch modules take NCHW.
    ``x = (pixel - mean) / scale`` on uint8 pixels, channels in ``color`` order.
    """

    height: int
    width: int
    channels: int
    mean: float
    scale: float
    color: str = "RGB"  # "GRAY" or "RGB"
    input_name: str = "input"
    output_names: tuple[str, ...] = ("embedding",)

    @property
    def nhwc(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output_names"] = list(self.output_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        d = dict(d)
        d["output_names"] = tuple(d["output_names"])
        return cls(**d)


MNIST_INPUT = InputSpec(
    28, 28, 1, mean=0.0, scale=255.0, color="GRAY", input_name="input_x", output_names=("logits", "embedding")
)
FACE_INPUT_112x96 = InputSpec(
    112, 96, 3, mean=127.5, scale=128.0, color="RGB", input_name="input", output_names=("embedding",)
)


def save_checkpoint(
    path: str | Path,
    arch: str,
    config: dict[str, Any],
    model: nn.Module,
    input_spec: InputSpec,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically."""
    import torch

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": dict(config),
        "input": input_spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    write_with(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint dict (no model is built)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("checkpoint not found", path)
    if path.stat().st_size == 0:
        raise CheckpointError("empty checkpoint file, expected a torch.save zip archive", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign pickles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a faceembed checkpoint: torch.load failed ({first[:160]}); expected a "
                              "torch.save zip archive", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            "not a faceembed checkpoint (no 'format' key); convert foreign checkpoints with "
            "'faceembed import'",
            path,
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint version {payload.get('version')} is not {VERSION}", path)
    _validate_payload(payload, path)
    return payload


def read_header(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict without its ``state_dict`` (format, version, arch, config, input, extra), as JSON
    values. The first read of a file validates it with :func:`read_checkpoint` (torch) and caches the header
    by the file's SHA-256 in ``CACHE/checkpoint_headers/``; later reads of the same bytes need no torch, so
    that a card lookup (``read_card``, the built-in model's path) costs a hash, not a 1-2 s torch import."""
    import json

    from faceembed.files import cache_dir, file_sha256, write_json

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("checkpoint not found", path)
    cached = cache_dir() / "checkpoint_headers" / f"{file_sha256(path)[:32]}.json"
    try:
        return json.loads(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass  # not read yet (or a damaged entry): read the checkpoint itself
    header = {k: v for k, v in read_checkpoint(path).items() if k != "state_dict"}
    try:
        header = json.loads(json.dumps(header))  # what a cached read returns: lists, not tuples
    except (TypeError, ValueError):
        return header  # a config that is not JSON: read with torch every time
    with contextlib.suppress(OSError):  # a read-only cache only costs the torch read next time
        write_json(cached, header)
    return header


_REQUIRED = {"arch": str, "config": dict, "input": dict, "state_dict": dict}


def _validate_payload(payload: dict[str, Any], path: Path) -> None:
    """Every key docs/formats.md promises, of the right type, and an input spec that parses."""
    import torch

    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)} (expected keys {', '.join(_REQUIRED)})", path)
    for key, kind in _REQUIRED.items():
        if not isinstance(payload[key], kind):
            raise CheckpointError(f"checkpoint '{key}' is a {type(payload[key]).__name__}, expected a {kind.__name__}",
                                  path)
    if not isinstance(payload.get("extra", {}), dict):
        raise CheckpointError("checkpoint 'extra' metadata must be a dict", path)
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError("checkpoint 'state_dict' holds values that are not tensors", path)
    try:
        InputSpec.from_dict(payload["input"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint 'input' metadata is not an input spec ({exc})", path) from None


def load_checkpoint(path: str | Path, expect_arch: str | None = None) -> tuple[nn.Module, InputSpec, dict]:
    """Build the checkpoint's network, load its weights strictly, and return (model in eval mode, spec, extra)."""
    payload = read_checkpoint(path)
    arch = payload["arch"]
    if expect_arch is not None and arch != expect_arch:
        raise CheckpointError(f"checkpoint holds a {arch!r} model, expected {expect_arch!r}", path)
    try:
        model = build(arch, **payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot build {arch!r} from the checkpoint's 'config' ({exc})", path) from None
    except CheckpointError as exc:  # unknown architecture: name the file
        raise CheckpointError(f"{exc.message} (expected a registered architecture)", exc.path or path) from None
    _check_weights(model, payload["state_dict"], arch, path)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit {arch!r}: {str(exc).splitlines()[0]}", path) from None
    model.eval()
    return model, InputSpec.from_dict(payload["input"]), payload.get("extra", {})


def _check_weights(model: nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """Missing, unexpected and reshaped tensors in one line (torch's own message spans many)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(names)} {what} (e.g. {names[0]!r})"
                for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
                if names]
    if problems:
        raise CheckpointError(f"weights do not fit {arch!r}: {', '.join(problems)} tensors; expected the "
                              "state_dict of the checkpoint's 'config'", path)
