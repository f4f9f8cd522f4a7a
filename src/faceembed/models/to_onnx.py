"""A PyTorch module to an ONNX file with the ``torch.export``-based exporter (PyTorch's default since 2.9; the
TorchScript exporter is deprecated), with named inputs/outputs and dynamic axes."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Recorded next to exported files so that caches made by another exporter are not reused (torch's version
#: read from its package metadata: a cache lookup imports no torch).
EXPORTER = f"torch.export/dynamo, torch {version('torch').split('+')[0]}"


def torch_to_onnx(model: nn.Module, dummy: torch.Tensor, path: str | Path, input_name: str,
                  output_names: Sequence[str], dynamic: Mapping[int, str], opset: int = 18) -> None:
    """Export ``model(dummy)`` to ``path``; the input's axes in ``dynamic`` (index -> name, e.g. ``{0: "batch"}``)
    are symbolic in the graph, the others fixed to ``dummy``'s. ``path`` is written in place: callers wrap it
    in an atomic writer."""
    import torch

    dims = {axis: torch.export.Dim(name, min=1, max=1 << 16) for axis, name in dynamic.items()}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), str(path), input_names=[input_name], output_names=list(output_names),
                              dynamic_shapes=(dims,), opset_version=opset, dynamo=True, external_data=False,
                              verbose=False)
    finally:
        quiet.setLevel(level)
