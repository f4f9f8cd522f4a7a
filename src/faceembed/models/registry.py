"""Every model name faceembed knows, in one place (timm-style):

- built-in models (:data:`BUILTIN`: converted on first use from a package's weights into the cache, no download
  at run time) and models imported into the cache (``faceembed import SRC --out NAME``): usable wherever a model
  file goes; :func:`resolve_model` turns them into their file and every command calls it first;
- network architectures (:data:`ARCHITECTURES`: the ``arch`` a checkpoint records, ``faceembed import --arch``);
- the benchmark's recipes (:data:`BENCH_RECIPES`: ``faceembed bench --models``, weights made by the benchmark).

An imported model may not take a name of any of these (:func:`check_new_name`), so one name means one model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceembed.errors import MissingInputError
from faceembed.files import cache_dir

MODEL_SUFFIXES = (".onnx", ".pt")

#: Architecture name -> "module:constructor" (imported only when built; see :func:`faceembed.models.build`).
ARCHITECTURES: dict[str, str] = {
    "mnist_net": "faceembed.models.mnist_net:MnistNet",
    "mnist_classifier": "faceembed.models.mnist_net:MnistClassifier",
    "mobilefacenet": "faceembed.models.mobilefacenet:MobileFaceNet",
    "sphere20": "faceembed.models.sphere:sphere20",
    "sphere64": "faceembed.models.sphere:sphere64",
    "iresnet18": "faceembed.models.iresnet:iresnet18",
    "iresnet34": "faceembed.models.iresnet:iresnet34",
    "iresnet50": "faceembed.models.iresnet:iresnet50",
    "iresnet100": "faceembed.models.iresnet:iresnet100",
    "pfe": "faceembed.models.pfe_head:PFEModel",
    "pfe_head": "faceembed.models.pfe_head:UncertaintyHead",
    "mtcnn": "faceembed.models.mtcnn:MTCNN",
    "dlib_resnet": "faceembed.models.dlib_resnet:DlibResNet",
}

#: The benchmark's own models (``faceembed bench --models``): name -> what the benchmark builds.
BENCH_RECIPES: dict[str, str] = {
    "mnist": "SphereFace MNIST net (the demo's trained checkpoint when found)",
    "mobilefacenet": "MobileFaceNet 112x96 (the published CASIA-WebFace weights with --data)",
    "sphere20": "SphereFace-20 112x96 (initial weights: speed only)",
    "sphere64": "SphereFace-64 112x96 (initial weights: speed only)",
    "pfe": "MobileFaceNet + PFE uncertainty head",
    "pfe-sphere64": "SphereFace-64 + PFE uncertainty head (the paper's backbone)",
}


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
    cache_file: str  # the checkpoint's file name in the cache

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
        "see README (LFW 10-fold)", "faceembed.models.dlib_weights:dlib_resnet_checkpoint", "dlib_resnet.pt"),
}


def check_new_name(name: str) -> None:
    """Refuse a name for an imported model that already means another model (one line naming what it is)."""
    from faceembed.errors import FaceembedError

    kinds = [("a built-in model", BUILTIN), ("an architecture", ARCHITECTURES), ("a benchmark model", BENCH_RECIPES)]
    for what, names in kinds:
        if name in names:
            raise FaceembedError(f"{name!r} is already {what}'s name ('faceembed models' lists them); choose another "
                                 "--out")


def builtin_of(model: str | Path, path: str | Path | None = None) -> str | None:
    """The built-in name ``model`` stands for (given as the name, or as the built-in's cached file), else None."""
    if str(model) in BUILTIN:
        return str(model)
    target = Path(path if path is not None else model)
    for name, entry in BUILTIN.items():
        if target.name == entry.cache_file and target.parent.resolve() == cache_dir().resolve():
            return name
    return None


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
    """Every name, by kind, for ``faceembed models``: built-in and imported models (usable wherever a model file
    goes), architectures and the benchmark's recipes."""
    hidden = ("make", "cache_file")
    return {"builtin": [{k: v for k, v in vars(m).items() if k not in hidden} for m in BUILTIN.values()],
            "imported": [{"name": p.stem, "path": str(p)} for p in imported_models()],
            "architectures": sorted(ARCHITECTURES), "bench": BENCH_RECIPES}
