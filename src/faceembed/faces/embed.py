"""Embed photos: detect (MTCNN) -> align (5-point similarity) -> run a face model, for image folders.

Used by ``faceembed enroll``, ``identify`` and ``evaluate-identification``. The model is a faceembed
checkpoint (``.pt``, PyTorch) or an exported ``.onnx`` (ONNX Runtime); its input spec (size, mean, scale)
comes from the checkpoint or the ONNX metadata. Embeddings are the ``mu`` output if the model has one (PFE,
with ``sigma_sq``), else ``embedding``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import FaceembedError, InputFormatError, MissingInputError
from faceembed.models.checkpoint import FACE_INPUT_112x96, InputSpec, read_checkpoint


def model_input_spec(path: str | Path) -> InputSpec:
    """The input spec of a checkpoint or of an ONNX file exported by faceembed (default: 112x96 faces)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("model file not found", path)
    if path.suffix == ".onnx":
        import onnx

        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception:  # protobuf decode errors
            raise InputFormatError("not a valid ONNX model", path) from None
        return InputSpec.from_dict(json.loads(meta["faceembed.input"])) if "faceembed.input" in meta \
            else FACE_INPUT_112x96
    return InputSpec.from_dict(read_checkpoint(path)["input"])


@dataclass
class FaceModel:
    """A loaded face model: ``backend`` (see :mod:`faceembed.inference.backends`) and its input ``spec``."""

    path: Path
    backend: object
    spec: InputSpec

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, threads: int | None = None) -> FaceModel:
        """Open ``path``: ``.pt`` on PyTorch, ``.onnx`` on ONNX Runtime unless ``backend`` says otherwise."""
        from faceembed.inference.backends import load_backend

        path = Path(path)
        spec = model_input_spec(path)
        be = backend or ("ort" if path.suffix == ".onnx" else "torch")
        return cls(path, load_backend(path, be, threads=threads), spec)

    def embed(self, faces: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Aligned uint8 RGB faces ``[N, H, W, 3]`` -> ``(embeddings [N, D], sigma_sq [N, D] or None)``."""
        s = self.spec
        if faces.shape[1:3] != (s.height, s.width):
            raise InputFormatError(f"faces are {faces.shape[1]}x{faces.shape[2]} but the model takes "
                                   f"{s.height}x{s.width}", self.path)
        names = list(self.backend.output_names)
        emb_i = names.index("mu") if "mu" in names else names.index("embedding") if "embedding" in names else 0
        sig_i = names.index("sigma_sq") if "sigma_sq" in names else None
        embs, sigs = [], []
        for i in range(0, len(faces), batch):
            x = faces[i:i + batch]
            if s.color == "GRAY":
                x = x.mean(axis=3, keepdims=True)
            outs = self.backend.run(((x.astype(np.float32) - s.mean) / s.scale).astype(np.float32))
            embs.append(outs[emb_i])
            if sig_i is not None:
                sigs.append(outs[sig_i])
        if not embs:
            return np.zeros((0, 0), np.float32), None
        return np.concatenate(embs).astype(np.float32), (np.concatenate(sigs).astype(np.float32) if sigs else None)


@dataclass
class EmbedResult:
    """Embeddings of the images that went through (``relpaths`` rows), and ``failed`` ``(relpath, reason)``;
    ``seconds`` per stage (detect, align, embed)."""

    relpaths: list[str]
    embeddings: np.ndarray
    sigma_sq: np.ndarray | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedOptions:
    """How photos are embedded, the same for the local and the Ray engine: which face to ``keep`` when a photo
    has several (largest | center), ``on_error`` skip | stop, MTCNN's ``min_face_size`` and runtime
    (``detector_backend`` ort | torch), progress bars."""

    keep: str = "largest"
    on_error: str = "skip"
    min_face_size: float = 40.0
    detector_backend: str = "ort"
    progress: bool = False

    def check(self) -> EmbedOptions:
        """One clear error for a bad choice."""
        for name, value, choices in (("keep", self.keep, ("largest", "center")),
                                     ("on-error", self.on_error, ("skip", "stop")),
                                     ("detector-backend", self.detector_backend, ("ort", "torch"))):
            if value not in choices:
                raise FaceembedError(f"--{name} must be one of {', '.join(choices)}, not {value!r}")
        return self


def embed_images(root: str | Path | None, relpaths: Sequence[str], model: FaceModel,
                 landmarks: dict[str, np.ndarray] | None = None, workers: int | None = None,
                 **options: Any) -> EmbedResult:
    """Detect (unless ``landmarks`` are given), align and embed ``root/relpath`` for every relpath;
    ``options`` are :class:`EmbedOptions` fields.

    Images without a face or unreadable ones are skipped (``failed``) or, with ``on_error="stop"``, raise.
    """
    from faceembed.faces.align import align_images_in_memory
    from faceembed.faces.detect import DetectorConfig
    from faceembed.faces.detect_files import detect_files

    o = EmbedOptions(**options).check()
    on_error = o.on_error
    seconds: dict[str, float] = {}
    failed: list[tuple[str, str]] = []
    t = time.perf_counter()
    if landmarks is None:
        det = detect_files(root, relpaths, DetectorConfig(min_face_size=o.min_face_size),
                           backend=o.detector_backend, workers=workers, keep=o.keep, on_error=on_error,
                           progress=o.progress)
        landmarks, failed = det.landmarks, list(det.failed)
        seconds["detect"] = time.perf_counter() - t
    ok = [r for r in relpaths if r in landmarks]
    missing = [r for r in relpaths if r not in landmarks and r not in {f for f, _ in failed}]
    if missing and on_error == "stop":
        raise InputFormatError("no landmarks for this image", os.path.join(str(root or ""), missing[0]))
    failed += [(r, "no landmarks") for r in missing]
    t = time.perf_counter()
    s = model.spec
    faces = align_images_in_memory(root if root is not None else "", landmarks, ok, size=(s.height, s.width),
                                   workers=workers, progress=False) if ok else np.zeros((0, s.height, s.width, 3),
                                                                                         np.uint8)
    seconds["align"] = time.perf_counter() - t
    t = time.perf_counter()
    emb, sig = model.embed(faces) if len(faces) else (np.zeros((0, 0), np.float32), None)
    seconds["embed"] = time.perf_counter() - t
    return EmbedResult(ok, emb, sig, failed, seconds, {r: landmarks[r] for r in ok})
