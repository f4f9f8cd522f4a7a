"""The models ``faceembed bench`` measures, prepared once into ``work_dir``: a checkpoint, its fp32 ONNX
export (parity-checked), two int8 QDQ models calibrated on real inputs (``faceembed quantize``'s schemes
residual-float for OpenVINO and full for ONNX Runtime), and 64 real input rows kept out of calibration.

Weights: ``mobilefacenet`` and the ``pfe`` backbone use the published MobileFaceNet checkpoint when
``data`` has it; ``mnist`` uses a trained demo checkpoint when one is found; others (and the PFE heads) keep
their initialisation, which is all a speed measurement needs. Inputs are always real: MNIST test digits,
or LFW faces aligned with the provided landmarks.

A model *file* (``bench --models PATH``: an ONNX file with a model card, e.g. from ``faceembed import``, or a
faceembed checkpoint) is prepared the same way by :func:`prepare_file`: its inputs are LFW faces aligned onto
its card's template and crop and preprocessed per its card (colour, normalisation, layout), MNIST digits for a
28x28 gray card; its int8 files are calibrated in the graph's own batch; an ONNX file has no checkpoint, so
its reference is ONNX Runtime fp32 on the file and the PyTorch rows are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceembed.export.onnx_export import export_onnx
from faceembed.export.quantize import quantize_model
from faceembed.models import build
from faceembed.models.checkpoint import MNIST_INPUT, FACE_INPUT_112x96, save_checkpoint
from faceembed.models.registry import BENCH_RECIPES

BENCH_MODELS = tuple(BENCH_RECIPES)
WEIGHTS = "weights/mobilefacenet_casia_112x96.ckpt"
MNIST_TRAINED = ("runs/demo/train/checkpoint.pt", "runs/bench/mnist_trained.pt")
PFE_TRAINED = ("runs/demo/pfe/heads/fold_00.pt",)  # a head trained by 'faceembed demo lfw'



@dataclass
class BenchModel:
    """Files and inputs of one benchmarked model."""

    name: str
    checkpoint: Path | None  # None: a model file given as ONNX (no PyTorch rows; ONNX Runtime fp32 is the reference)
    onnx_fp32: Path
    onnx_int8: Path  # scheme residual-float: the int8 OpenVINO runs
    onnx_int8_full: Path  # scheme full: the int8 ONNX Runtime runs (its integer kernels need int8 everywhere)
    inputs: np.ndarray  # real rows for timing and the accuracy check, none of them a calibration image
    is_classifier: bool
    trained: bool = False  # real trained weights: task accuracy is meaningful
    card: Any = field(default=None)  # a model file's ModelCard (None: a built-in model)

    def onnx_for(self, backend: str, precision: str) -> Path:
        """The ONNX file ``backend`` runs at ``precision``."""
        if precision != "int8":
            return self.onnx_fp32
        return self.onnx_int8_full if backend == "ort" else self.onnx_int8


def _face_inputs(data: Path | None, n: int = 256) -> np.ndarray:
    from faceembed.batch.tobin import face_tensors
    from faceembed.export.parity_inputs import lfw_root

    root = data / "lfw" if data else lfw_root()
    if root is None or not (root / "images").is_dir():
        raise FileNotFoundError("bench needs real faces: pass --data ../shared/data (LFW)")
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.align_files import align_images_in_memory

    marks = read_landmarks(root / "lfw_landmark.txt")
    names = sorted(marks)[::max(1, len(marks) // n)][:n]
    return face_tensors(align_images_in_memory(root / "images", marks, names, workers=1))


def _checkpoint(name: str, path: Path, data: Path | None) -> None:
    torch.manual_seed(0)
    if name == "mnist":
        trained = next((Path(p) for p in MNIST_TRAINED if Path(p).is_file()), None)
        if trained:
            path.write_bytes(trained.read_bytes())
            return
        config = {"embedding_size": 64}
        save_checkpoint(path, "mnist_classifier", config, build("mnist_classifier", **config), MNIST_INPUT)
        return
    if name in ("sphere20", "sphere64"):
        save_checkpoint(path, name, {"embedding_size": 512}, build(name, embedding_size=512), FACE_INPUT_112x96)
        return
    if name == "mobilefacenet" and data and (data / WEIGHTS).is_file():
        from faceembed.convert.torch_state import import_checkpoint

        import_checkpoint(data / WEIGHTS, path)
        return
    if name == "mobilefacenet":
        save_checkpoint(path, name, {"embedding_size": 128}, build(name, embedding_size=128), FACE_INPUT_112x96)
        return
    trained_pfe = next((Path(p) for p in PFE_TRAINED if Path(p).is_file()), None)
    if name == "pfe" and trained_pfe:
        path.write_bytes(trained_pfe.read_bytes())
        return
    backbone = "sphere64" if name == "pfe-sphere64" else "mobilefacenet"
    config = {"backbone": backbone, "backbone_config": {"embedding_size": 512 if backbone == "sphere64" else 128}}
    model = build("pfe", **config)
    if backbone == "mobilefacenet" and data and (data / WEIGHTS).is_file():
        from faceembed.convert.torch_state import extract_state_dict

        state, _ = extract_state_dict(torch.load(data / WEIGHTS, map_location="cpu", weights_only=True))
        model.backbone.load_state_dict(state)
    spec = FACE_INPUT_112x96.__class__(**{**FACE_INPUT_112x96.to_dict(), "output_names": ("mu", "sigma_sq")})
    save_checkpoint(path, "pfe", config, model.eval(), spec)


def _weights_source(name: str, data: Path | None) -> dict | None:
    """The file whose weights bench model ``name`` takes (None: initialised from seed 0)."""
    from faceembed.fingerprint import file_identity

    candidates = {"mnist": MNIST_TRAINED, "pfe": PFE_TRAINED}.get(name, ())
    found = next((Path(p) for p in candidates if Path(p).is_file()), None)
    if found is None and name in ("mobilefacenet", "pfe") and data and (data / WEIGHTS).is_file():
        found = data / WEIGHTS
    return file_identity(found) if found else None


INT8_SCHEMES = ("residual-float", "full")


def prepare_model(name: str, work_dir: str | Path, data: str | Path | None = None,
                  overwrite: bool = False, int8_schemes: tuple[str, ...] = INT8_SCHEMES) -> BenchModel:
    """Make (or reuse) the checkpoint, fp32 ONNX and the two int8 ONNX files of bench model ``name`` in
    ``work_dir/name/``, a folder recording what made it (weights, calibration images, exporter): files made from
    other weights or images are refused unless ``overwrite``.

    Calibration and checking use different real images: MNIST train digits calibrate and test digits check;
    of 320 LFW faces spread over the alphabet, every fifth checks and the other 256 calibrate. Only the int8
    files of ``int8_schemes`` are made (the configurations asked for).
    """
    import hashlib

    from faceembed.fingerprint import claim_folder
    from faceembed.models.to_onnx import EXPORTER

    data = Path(data) if data else None
    if name == "mnist":
        from faceembed.batch.tobin import mnist_tensors

        calib, check = mnist_tensors("train", limit=256)[0], mnist_tensors("test", limit=64)[0]
    else:
        faces = _face_inputs(data, 320)
        check, calib = faces[::5], np.delete(faces, np.s_[::5], axis=0)
    work = Path(work_dir) / name
    claim_folder(work, {"command": "bench", "model": name, "weights": _weights_source(name, data),
                        "calibration": hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest(),
                        "exporter": EXPORTER}, overwrite)
    ckpt, fp32, int8, int8_full = (work / f"{name}{suffix}"
                                   for suffix in (".pt", ".onnx", ".int8.onnx", ".int8-full.onnx"))
    if not ckpt.exists():
        _checkpoint(name, ckpt, data)
    trained = _is_trained(name, data)
    if not fp32.exists():
        export_onnx(ckpt, fp32, calib[:32])
    _quantize(fp32, calib, int8, int8_full, int8_schemes)
    return BenchModel(name, ckpt, fp32, int8, int8_full, np.ascontiguousarray(check), name == "mnist", trained)


def _quantize(fp32: Path, calib: np.ndarray, int8: Path, int8_full: Path, schemes: tuple[str, ...]) -> None:
    """The int8 files of ``schemes`` not made yet, calibrated on ``calib`` (in the graph's own batch)."""
    if "residual-float" in schemes and not int8.exists():
        quantize_model(fp32, calib, int8, max_images=len(calib), scheme="residual-float")
    if "full" in schemes and not int8_full.exists():
        quantize_model(fp32, calib, int8_full, max_images=len(calib), scheme="full")


def is_model_file(name: str) -> bool:
    """Whether a ``--models`` entry names a model file or a built-in / imported model (``dlib-resnet``), not one
    of bench's own models."""
    from faceembed.models.registry import BUILTIN, imported_models

    if name in BENCH_MODELS:
        return False
    return Path(name).suffix.lower() in (".onnx", ".pt", ".pth", ".ckpt") or name in BUILTIN or \
        name in {p.stem for p in imported_models()}


def bench_model_names(text: str) -> list[str]:
    """``bench --models``: comma-separated benchmark recipes, model names or model files, checked before any
    work (an unknown name or a missing file is one clear error)."""
    from faceembed.errors import FaceembedError
    from faceembed.models.registry import is_model_name

    names = [t.strip() for t in text.split(",") if t.strip()]
    files = [n for n in names if is_model_file(n)]
    for f in files:
        if not is_model_name(f) and not Path(f).is_file():  # names (dlib-resnet) resolve when prepared
            raise FaceembedError(f"--models: model file {f!r} not found")
    unknown = [n for n in names if n not in files and n not in BENCH_MODELS]
    if unknown or not names:
        raise FaceembedError(f"--models takes a comma-separated list of {', '.join(BENCH_MODELS)}, model names "
                             f"(faceembed models) or model files, not {text!r}")
    return names


def card_inputs(card: Any, data: Path | None, n: int) -> np.ndarray:
    """``n`` real input rows for a model card: LFW faces aligned onto the card's template and crop (the box
    MTCNN's landmarks imply for template ``none``) and preprocessed per the card; MNIST test digits for a
    28x28 gray card with template ``none``."""
    from faceembed.data.preprocess import preprocess
    from faceembed.errors import FaceembedError

    if card.template == "none" and (card.channels, card.height, card.width) == (1, 28, 28):
        from faceembed.data.mnist import default_mnist_root, load_mnist

        return preprocess(load_mnist(default_mnist_root(), "test")[0][:n], card)
    from faceembed.export.parity_inputs import lfw_root

    root = data / "lfw" if data else lfw_root()
    if root is None or not (root / "images").is_dir():
        raise FaceembedError("bench needs real faces for a face model file: pass --data ../shared/data (LFW)")
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.align_files import align_images_in_memory

    marks = read_landmarks(root / "lfw_landmark.txt")
    names = sorted(marks)[::max(1, len(marks) // n)][:n]
    faces = align_images_in_memory(root / "images", marks, names, size=(card.height, card.width), workers=1,
                                   template=card.template)
    return preprocess(faces, card)


def prepare_file(path: str | Path, work_dir: str | Path, data: str | Path | None = None, overwrite: bool = False,
                 int8_schemes: tuple[str, ...] = INT8_SCHEMES) -> BenchModel:
    """A model file benchmarked beside the built-in models: its card says how to make its real inputs (320
    per :func:`card_inputs`: every fifth checks, the other 256 calibrate the int8 files, in the graph's own
    batch). An ONNX file is its own fp32 model; a checkpoint is exported first. Derived files go to
    ``work_dir/files/STEM-HASH/`` (a folder recording the file and the calibration images)."""
    import hashlib

    from faceembed.errors import MissingInputError
    from faceembed.files import file_sha256
    from faceembed.fingerprint import claim_folder, file_identity
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    path, data = resolve_model(path), Path(data) if data else None
    if not path.is_file():
        raise MissingInputError("model file to bench not found", path)
    card = read_card(path)
    card = card if path.suffix.lower() == ".onnx" else card.replace(layout="NHWC", batch=None)  # torch: NHWC
    faces = card_inputs(card, data, 320)
    check, calib = faces[::5], np.delete(faces, np.s_[::5], axis=0)
    work = Path(work_dir) / "files" / f"{path.stem}-{file_sha256(path)[:12]}"
    claim_folder(work, {"command": "bench", "model": file_identity(path),
                        "calibration": hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest()}, overwrite)
    if path.suffix.lower() == ".onnx":
        ckpt, fp32 = None, path
    else:
        ckpt, fp32 = path, work / f"{path.stem}.onnx"
        if not fp32.exists():
            export_onnx(ckpt, fp32, calib[:32])
    int8, int8_full = work / f"{path.stem}.int8.onnx", work / f"{path.stem}.int8-full.onnx"
    _quantize(fp32, calib, int8, int8_full, int8_schemes)
    classifier = card.outputs[0].role == "logits"
    return BenchModel(str(path), ckpt, fp32, int8, int8_full, np.ascontiguousarray(check), classifier,
                      trained=card.template != "none", card=card)


def _is_trained(name: str, data: Path | None) -> bool:
    if name == "mnist":
        return any(Path(p).is_file() for p in MNIST_TRAINED)
    return name in ("mobilefacenet", "pfe") and data is not None and (data / WEIGHTS).is_file()
