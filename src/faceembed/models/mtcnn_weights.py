"""Convert the trained MTCNN weights shipped by the MIT-licensed ``mtcnn`` PyPI package into a faceembed
checkpoint (arch ``"mtcnn"``, see :mod:`faceembed.models.mtcnn`).

The package stores each network as ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``: a joblib pickle
(lz4-compressed) of the Keras ``model.get_weights()`` list, in layer order: for every conv ``kernel`` (HWIO),
``bias``; for every PReLU ``alpha`` (``(1, 1, C)`` after convolutions, ``(C,)`` after dense layers); for every
dense ``kernel`` (in, out), ``bias``. The package is only read as data: it is never imported (it would import
TensorFlow); its folder is found with ``importlib.util.find_spec``.

The converted checkpoint is cached (``$FACEEMBED_CACHE`` or ``~/.cache/faceembed``, file ``mtcnn.pt``) and
made on first use by :func:`mtcnn_checkpoint`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceembed.errors import CheckpointError, MissingInputError
from faceembed.files import cache_dir
from faceembed.models.checkpoint import InputSpec, read_header, save_checkpoint

if TYPE_CHECKING:  # torch only where weights are converted: a cached checkpoint's path needs none
    import torch

ONET_SIZE = 48  # O-Net's input side (square crops), here and not in models/mtcnn.py: that module needs torch

#: Torch parameter names in the order of the Keras weight list, per network.
LAYOUT: dict[str, list[str]] = {
    "pnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "conv4_1.weight", "conv4_1.bias",
             "conv4_2.weight", "conv4_2.bias"],
    "rnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "fc4.weight", "fc4.bias", "prelu4.weight",
             "fc5_1.weight", "fc5_1.bias", "fc5_2.weight", "fc5_2.bias"],
    "onet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias", "prelu2.weight",
             "conv3.weight", "conv3.bias", "prelu3.weight", "conv4.weight", "conv4.bias", "prelu4.weight",
             "fc5.weight", "fc5.bias", "prelu5.weight", "fc6_1.weight", "fc6_1.bias", "fc6_2.weight",
             "fc6_2.bias", "fc6_3.weight", "fc6_3.bias"],
}

MTCNN_INPUT = InputSpec(ONET_SIZE, ONET_SIZE, 3, mean=127.5, scale=128.0, color="RGB", input_name="input",
                        output_names=("box_reg", "landmarks", "face_prob"))


def mtcnn_assets_dir() -> Path:
    """The ``assets/weights`` folder of the installed ``mtcnn`` package (located without importing it)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("the 'mtcnn' package (MTCNN weights) is not installed: pip install mtcnn")
    folder = Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"
    if not folder.is_dir():
        raise MissingInputError("the 'mtcnn' package has no assets/weights folder", folder)
    return folder


def keras_to_torch(name: str, value: np.ndarray) -> torch.Tensor:
    """One Keras weight as the torch parameter ``name``: conv HWIO -> OIHW, dense (in, out) -> (out, in),
    PReLU alpha -> one slope per channel."""
    import torch

    a = np.asarray(value, dtype=np.float32)
    if name.startswith("prelu"):
        a = a.reshape(-1)
    elif name.endswith(".weight") and a.ndim == 4:
        a = a.transpose(3, 2, 0, 1)
    elif name.endswith(".weight") and a.ndim == 2:
        a = a.T
    return torch.from_numpy(np.ascontiguousarray(a))


def state_dict_from_keras(weights: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """``{"pnet": [...], "rnet": [...], "onet": [...]}`` Keras weight lists -> the state dict of :class:`MTCNN`."""
    out: dict[str, torch.Tensor] = {}
    for net, names in LAYOUT.items():
        values = weights[net]
        if len(values) != len(names):
            raise CheckpointError(f"{net}: expected {len(names)} weight arrays, got {len(values)}")
        for n, v in zip(names, values, strict=True):
            out[f"{net}.{n}"] = keras_to_torch(n, v)
    return out


def load_keras_weights(folder: str | Path | None = None) -> dict[str, list[np.ndarray]]:
    """Read ``pnet.lz4``, ``rnet.lz4``, ``onet.lz4`` (joblib) from ``folder`` (default: the package's)."""
    import joblib

    folder = Path(folder) if folder is not None else mtcnn_assets_dir()
    out = {}
    for net in LAYOUT:
        path = folder / f"{net}.lz4"
        if not path.is_file():
            raise MissingInputError("MTCNN weight file not found", path)
        try:
            out[net] = list(joblib.load(path))
        except Exception as exc:  # joblib/lz4/pickle raise many types on corrupt files
            raise CheckpointError(f"cannot read MTCNN weights ({type(exc).__name__})", path) from None
    return out


def convert_mtcnn_weights(out: str | Path, folder: str | Path | None = None) -> Path:
    """Convert the ``mtcnn`` package's weights into a faceembed checkpoint at ``out`` (atomic) and return it."""
    from faceembed.models.mtcnn import MTCNN

    folder = Path(folder) if folder is not None else mtcnn_assets_dir()
    model = MTCNN()
    state = state_dict_from_keras(load_keras_weights(folder))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"MTCNN weights do not fit: {str(exc).splitlines()[0]}", folder) from None
    digest = hashlib.sha256()
    for net in LAYOUT:
        digest.update((folder / f"{net}.lz4").read_bytes())
    save_checkpoint(out, "mtcnn", {}, model, MTCNN_INPUT,
                    extra={"source": "mtcnn PyPI package assets (MIT licence)", "source_sha256": digest.hexdigest()})
    return Path(out)


def mtcnn_checkpoint(path: str | Path | None = None) -> Path:
    """Path of a converted MTCNN checkpoint: ``path`` if given (must exist), else the cached one, converted
    from the ``mtcnn`` package on first use."""
    if path is not None:
        read_header(path)  # a valid checkpoint (torch-free once read: see read_header)
        return Path(path)
    target = cache_dir() / "mtcnn.pt"
    if target.is_file():
        try:
            if read_header(target).get("arch") == "mtcnn":
                return target
        except CheckpointError:
            pass  # a corrupt cache entry is rebuilt
    convert_mtcnn_weights(target)
    read_header(target)  # cached now, while torch is loaded: later processes find the checkpoint without it
    return target
