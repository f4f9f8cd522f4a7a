"""Networks, one per file, built by architecture name (the names: :data:`faceembed.models.registry.ARCHITECTURES`).

Every network is a plain ``nn.Module`` taking NCHW float input already normalised, and returning a tuple of
tensors named by its ``output_names`` attribute (the ONNX output names). Registry values are import paths
so that importing this package stays cheap: torch is imported by the network modules, not here (the card,
registry and weight-file helpers under this package are used by ONNX Runtime / OpenVINO paths that need no
torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from faceembed.errors import CheckpointError
from faceembed.models.registry import ARCHITECTURES

if TYPE_CHECKING:
    from torch import nn

MODELS = ARCHITECTURES  # the one table lives in faceembed.models.registry


def constructor(name: str) -> Callable[..., nn.Module]:
    """Return the constructor registered under ``name``."""
    if name not in MODELS:
        raise CheckpointError(f"unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}")
    module_name, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def build(name: str, **config) -> nn.Module:
    """Build the network registered under ``name`` with keyword ``config``."""
    return constructor(name)(**config)
