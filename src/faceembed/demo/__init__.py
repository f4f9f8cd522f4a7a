"""Demos: each runs one whole pipeline through the same public functions as the CLI and prints one table.

* ``mnist``: train -> export fp32 / fp16 -> tobin -> infer -> accuracy, plus ONNX latency per batch size.
* ``lfw``: import backbone -> cross-fold PFE heads -> align -> features (PyTorch, ONNX fp32 / fp16, OpenVINO
  int8) -> verify (cosine, MLS) -> rejection curves.
* ``photos``: raw LFW photos -> MTCNN detect -> align -> embed -> enroll -> identify (rank-1, DIR, photos/s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def mnist_demo(out: str | Path, json_path: str | Path | None = None, quick: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """``faceembed demo mnist``."""
    from faceembed.demo.mnist import run_mnist_demo

    return run_mnist_demo(out, json_path, quick=quick, progress=progress)


def lfw_demo(out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
             quick: bool = False, progress: bool = True, backbone: str | None = None,
             detections: str | Path | None = None) -> dict[str, Any]:
    """``faceembed demo lfw``."""
    from faceembed.demo.lfw import run_lfw_demo

    return run_lfw_demo(out, json_path, data=data, quick=quick, progress=progress, backbone=backbone,
                        detections=detections)


def photos_demo(out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
                quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """``faceembed demo photos``: detect -> align -> embed -> enroll -> identify on LFW."""
    from faceembed.demo.photos import run_photos_demo

    return run_photos_demo(out, json_path, data=data, quick=quick, progress=progress)


DEMOS = {"mnist": mnist_demo, "lfw": lfw_demo, "photos": photos_demo}


def run_demo(name: str, out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
             quick: bool = False, progress: bool = True, backbone: str | None = None,
             detections: str | Path | None = None) -> dict[str, Any]:
    """Run the demo called ``name`` (a key of ``DEMOS``); ``backbone`` and ``detections`` only for ``lfw``."""
    from faceembed.errors import FaceembedError

    if name not in DEMOS:
        raise FaceembedError(f"unknown demo {name!r}; choose one of {', '.join(DEMOS)}")
    for flag, value in (("backbone", backbone), ("detections", detections)):
        if value is not None and name != "lfw":
            raise FaceembedError(f"--{flag} applies to 'demo lfw', not 'demo {name}'")
    if name == "lfw":
        return lfw_demo(out, json_path, data=data, quick=quick, progress=progress, backbone=backbone,
                        detections=detections)
    if name == "mnist":
        return mnist_demo(out, json_path, quick=quick, progress=progress)
    return DEMOS[name](out, json_path, data=data, quick=quick, progress=progress)
