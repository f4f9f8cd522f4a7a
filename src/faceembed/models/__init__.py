"""Networks, one per file, and the name -> constructor registry.

Every network is a plain ``nn.Module`` taking NCHW float input already normalised, and returning a tuple of
tensors named by its ``output_names`` attribute (the ONNX output names). Registry values are import paths
so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from faceembed.errors import CheckpointError

MODELS: dict[str, str] = {
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


def constructor(name: str) -> Callable[..., nn.Module]:
    """Return the constructor registered under ``name``."""
    if name not in MODELS:
        raise CheckpointError(f"unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}")
    module_name, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def build(name: str, **config) -> nn.Module:
    """Build the network registered under ``name`` with keyword ``config``."""
    return constructor(name)(**config)
