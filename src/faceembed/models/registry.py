"""Model names: the built-in models (converted on first use from a package's weights into the cache, no download
at run time) and the models imported into the cache (``faceembed import SRC --out NAME``). Every command that
takes a model file also takes one of these names."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceembed.errors import MissingInputError
from faceembed.files import cache_dir

MODEL_SUFFIXES = (".onnx", ".pt")


@dataclass(frozen=True)
class BuiltinModel:
    """A model faceembed ships (as conversion code over a package's weights)."""

    name: str
    summary: str
    input: str
    licence: str
    weights: str
    lfw: str  # measured here, with the command that reproduces it in README
    make: str  # "module:function" returning the cached checkpoint's path (converting it on first use)

    def path(self) -> Path:
        """The cached checkpoint, converted on first use."""
        module, attr = self.make.split(":")
        maker: Callable[[], Path] = getattr(importlib.import_module(module), attr)
        return Path(maker())


BUILTIN: dict[str, BuiltinModel] = {
    "dlib-resnet": BuiltinModel(
        "dlib-resnet", "dlib's face-recognition ResNet (29 conv layers, 128-d embedding), as a PyTorch module",
        "150x150 RGB face chip (dlib's alignment: 5 points, padding 0.25)",
        "public domain / CC0 (the models of the MIT-licensed face_recognition_models package)",
        "face_recognition_models (PyPI): dlib_face_recognition_resnet_model_v1.dat, read as data",
        "see README (LFW 10-fold)", "faceembed.models.dlib_weights:dlib_resnet_checkpoint"),
}


def models_dir() -> Path:
    """Where ``faceembed import SRC --out NAME`` puts models given by name: ``CACHE/models``."""
    return cache_dir() / "models"


def is_model_name(text: str | Path) -> bool:
    """A bare name (no folder, no suffix): a built-in or a model in :func:`models_dir`."""
    s = str(text)
    return "/" not in s and "\\" not in s and Path(s).suffix.lower() not in (*MODEL_SUFFIXES, ".pb", ".pth",
                                                                              ".ckpt")


def resolve_model(model: str | Path) -> Path:
    """The file of ``model``: an existing path as it is; a built-in name (converted on first use); the name of
    a model imported into the cache. Anything else is one clear error listing the names."""
    path = Path(model)
    if path.exists() or not is_model_name(model):
        return path
    name = str(model)
    if name in BUILTIN:
        return BUILTIN[name].path()
    for suffix in MODEL_SUFFIXES:
        if (models_dir() / f"{name}{suffix}").is_file():
            return models_dir() / f"{name}{suffix}"
    known = [*BUILTIN, *(p.stem for p in imported_models())]
    raise MissingInputError(f"no model file or model named {name!r}; known names: {', '.join(known)} "
                            "('faceembed models' lists them)")


def imported_models() -> list[Path]:
    """Model files imported into the cache by name."""
    folder = models_dir()
    return sorted(p for p in folder.iterdir() if p.suffix in MODEL_SUFFIXES) if folder.is_dir() else []


def list_models() -> dict[str, Any]:
    """``{"builtin": [...], "imported": [...]}`` for ``faceembed models``."""
    return {"builtin": [{k: v for k, v in vars(m).items() if k != "make"} for m in BUILTIN.values()],
            "imported": [{"name": p.stem, "path": str(p)} for p in imported_models()]}
