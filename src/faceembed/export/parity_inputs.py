"""Real inputs for the export parity check, chosen from the model's input spec."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceembed.data.tensorfiles import list_input_files, read_bin, read_manifest, read_npy
from faceembed.errors import FaceembedError, MissingInputError, ShapeMismatchError
from faceembed.export.onnx_export import PARITY_BATCHES
from faceembed.models.checkpoint import InputSpec

PARITY_COUNT = max(PARITY_BATCHES)


def load_tensor_input(path: str | Path, item_shape: tuple[int, ...], limit: int = PARITY_COUNT) -> np.ndarray:
    """Up to ``limit`` items from a .npy file or a tensor folder (NHWC float32)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError("parity input not found", path)
    if path.suffix == ".npy":
        return check_items(read_npy(path).astype(np.float32)[:limit], item_shape, path)
    manifest = read_manifest(path) if path.is_dir() else None
    chunks, total = [], 0
    for f in list_input_files(path, suffixes=(".bin",)):
        arr = read_bin(
            f,
            manifest["dtype"] if manifest else "float32",
            tuple(manifest["item_shape"]) if manifest else item_shape,
        )
        chunks.append(arr)
        total += len(arr)
        if total >= limit:
            break
    return check_items(np.concatenate(chunks)[:limit].astype(np.float32), item_shape, path)


def check_items(x: np.ndarray, item_shape: tuple[int, ...], source: str | Path) -> np.ndarray:
    """``x`` itself when its items have the model's input shape; else one clear error naming ``source``."""
    if tuple(x.shape[1:]) != tuple(item_shape):
        raise ShapeMismatchError(f"items of shape {list(x.shape[1:])}, but the model takes {list(item_shape)}",
                                 source)
    return x


def lfw_root() -> Path | None:
    """LFW from $FACEEMBED_LFW, ../shared/data/lfw, or the shared folder beside a source checkout, if present."""
    beside_checkout = Path(__file__).resolve().parents[4] / "shared" / "data" / "lfw"
    for candidate in (os.environ.get("FACEEMBED_LFW"), "../shared/data/lfw", beside_checkout):
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


def default_parity_inputs(spec: InputSpec, card=None) -> np.ndarray:
    """MNIST test digits for 28x28 gray models; LFW faces for face models, aligned onto the model card's
    template and crop and preprocessed per the card (colour, normalisation; NHWC, what the export takes), or
    per ``spec`` without a card."""
    if spec.nhwc == (28, 28, 1):
        from faceembed.batch.tobin import mnist_tensors

        return mnist_tensors("test", limit=PARITY_COUNT)[0]
    root = lfw_root()
    if root is None:
        raise FaceembedError(
            "no real faces for the parity check: pass --parity-input (tensor folder or .npy) "
            "or set FACEEMBED_LFW to an LFW folder"
        )
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.align_files import align_images_in_memory

    landmarks = read_landmarks(root / "lfw_landmark.txt")
    names = sorted(landmarks)[:PARITY_COUNT]
    size = (spec.height, spec.width)
    template = card.template if card is not None else None
    faces = align_images_in_memory(root / "images", landmarks, names, size=size, workers=1, template=template)
    if card is not None:
        from faceembed.data.preprocess import preprocess

        return preprocess(faces, card.replace(layout="NHWC"))
    return ((faces.astype(np.float32) - spec.mean) / spec.scale).astype(np.float32)
