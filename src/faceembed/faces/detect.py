"""MTCNN face detection and 5-point landmarks on RGB images (:class:`MTCNNDetector`).

Cascade (Zhang et al. 2016, with the conventions of the ``mtcnn`` package whose weights are used):

1. P-Net on an image pyramid (``cv2.INTER_AREA`` resizing, first scale maps the smallest face searched onto
   P-Net's 12 px cell, factor 0.709): proposals above 0.6, NMS 0.5 per scale, NMS 0.7 over all scales, squared.
2. R-Net on 24x24 crops of all proposals of all images at once (bilinear crop-and-resize, TensorFlow's
   ``crop_and_resize`` sampling, zero = mid-grey outside the image): score > 0.7, regression, NMS 0.7, squared.
3. O-Net on 48x48 crops: score > 0.8, landmarks, regression, NMS 0.7 by intersection over the smaller box.

Networks run on OpenVINO (``backend="openvino"``, f32 precision hint), ONNX Runtime (``"ort"``; both on the
ONNX files exported once into the cache folder) or PyTorch eager (``"torch"``); all give the same faces
(tested; OpenVINO and ONNX Runtime outputs differ by float noise, ~3e-6). ``"auto"`` is ``"ort+openvino"``
where OpenVINO is installed (else ONNX Runtime): P-Net on ONNX Runtime, R-Net and O-Net on OpenVINO f32. One
thread, median of rounds on a loaded machine (``python scripts/pipeline_speed.py --detector-backends``): 160 LFW
photos 11.5 / 5.56 / 5.15 ms per photo (ort / ort+openvino / openvino), the same photos at mixed sizes 10.0 /
8.53 / 10.4: P-Net's input size changes with every photo size and pyramid level, which OpenVINO's dynamic shapes
pay for, so P-Net stays on ONNX Runtime. OpenVINO's bf16 hint is faster again but moves the nets' scores by up
to 0.06 (``--detector-nets``), so it is not used. One detector per process,
``threads`` intra-op threads; :mod:`faceembed.faces.detect_files` and :mod:`faceembed.faces.pipeline` run one
per core.

LFW note: faces there are about 100 px in 250x250 images, so ``min_face_size=40`` (6 pyramid levels, the
smallest P-Net input 14x14) loses none of them and costs a fraction of the package's default of 20 px.

The smallest face searched is ``min_face_size`` px or ``min_face_fraction`` of the photo's shorter side,
whichever is larger (:func:`faceembed.faces.nms.smallest_face`; default
:data:`~faceembed.faces.nms.MIN_FACE_FRACTION` = 1/16, 0 disables it). A fixed pixel size alone makes a large
photo's first pyramid level its most expensive one (P-Net's work grows with the square of the side) and spends
it on faces a few hundredths of the frame tall: in a photo library such faces are bystanders and crowds, rarely
the person the photo is of, and too small for a good embedding anyway. With the floor, P-Net's largest input
has a shorter side of at most 12 / (1/16) = 192 px whatever the photo's size (a 1600x1200 photo: 9 levels
instead of 10, P-Net's pixels 3.5 times fewer, the smallest face 75 px instead of 40). 1/16 is conservative: a
portrait or a group of a dozen fills far more of the frame; a crowd shot may need ``--min-face-fraction 0``.
Photos whose shorter side is at most 16 x ``min_face_size`` (640 px at 40; all of LFW's 250x250) search exactly
as without the floor, bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from faceembed.errors import FaceembedError
from faceembed.faces import nms as B

DETECT_BACKENDS = ("auto", "ort+openvino", "openvino", "ort", "torch")


def resolve_detect_backend(backend: str) -> str:
    """``auto``: ``ort+openvino`` where OpenVINO is installed (the fastest, see module doc), else ``ort``."""
    if backend != "auto":
        return backend
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "ort"
    return "ort+openvino"


@dataclass(frozen=True)
class DetectorConfig:
    """Detection settings; defaults are the ``mtcnn`` package's except ``min_face_size`` (40) and
    ``min_face_fraction`` (the relative floor of the smallest face, 1/16 of the shorter side; 0: none), see
    the module doc."""

    min_face_size: float = 40.0
    min_face_fraction: float = B.MIN_FACE_FRACTION
    scale_factor: float = 0.709
    threshold_pnet: float = 0.6
    threshold_rnet: float = 0.7
    threshold_onet: float = 0.8
    nms_pnet_scale: float = 0.5
    nms_pnet: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_face_size(self.min_face_size, self.min_face_fraction)


def check_face_size(min_face_size: float, min_face_fraction: float) -> None:
    """One clear error for a smallest face that is not a positive size, or a fraction outside [0, 1)."""
    if not min_face_size > 0:
        raise FaceembedError(f"--min-face-size must be a positive number of pixels, not {min_face_size}")
    if not 0 <= min_face_fraction < 1:
        raise FaceembedError(f"--min-face-fraction must be in [0, 1) (0: no relative floor), not {min_face_fraction}")


def box_xywh(box: Sequence[float] | np.ndarray, digits: int) -> list[float]:
    """A detector box (x1, y1, x2, y2) as ``[x, y, w, h]`` rounded to ``digits`` decimals (people.json, the
    service's answers)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box)[:4])
    return [round(x1, digits), round(y1, digits), round(x2 - x1, digits), round(y2 - y1, digits)]


@dataclass
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2), ``score`` (O-Net probability), ``landmarks`` (5, 2) as (x, y)
    in the order left eye, right eye, nose, left mouth corner, right mouth corner (image left/right)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB HxWx3 -> float32 ``(pixel - 127.5) / 128``."""
    return (np.asarray(image, dtype=np.float32) - 127.5) * (1.0 / 128.0)


def crop_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Bilinear crops of ``boxes`` from a normalised HxWx3 ``image``, resized to ``size`` -> NCHW float32.

    Sampling follows ``tf.image.crop_and_resize`` with boxes divided by the image size as the ``mtcnn``
    package does: output pixel ``i`` samples ``y1 (H-1)/H + i (y2-y1) (H-1)/H / (size-1)``; outside the image
    the value is 0.
    """
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    fy, fx = (h - 1) / h, (w - 1) / w
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)[:, :4]):
        m = np.array([[(x2 - x1) * fx / (size - 1), 0.0, x1 * fx], [0.0, (y2 - y1) * fy / (size - 1), y1 * fy]])
        out[k] = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0))
    return out.transpose(0, 3, 1, 2)


class _TorchNets:
    def __init__(self, model, threads: int):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()

    def _run(self, net, x: np.ndarray) -> list[np.ndarray]:
        with self.torch.inference_mode():
            return [o.numpy() for o in net(self.torch.from_numpy(np.ascontiguousarray(x)))]

    def pnet(self, x):
        return self._run(self.model.pnet, x)

    def rnet(self, x):
        return self._run(self.model.rnet, x)

    def onet(self, x):
        return self._run(self.model.onet, x)


def export_mtcnn_onnx(model, folder: Path) -> dict[str, Path]:
    """Export P-Net (dynamic batch, height, width), R-Net and O-Net (dynamic batch) to ``folder/*.onnx``
    (NCHW float32 input ``input``); files already there are reused."""
    import torch

    from faceembed.files import write_with
    from faceembed.models.to_onnx import torch_to_onnx

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, size in (("pnet", None), ("rnet", 24), ("onet", 48)):
        net = getattr(model, name).eval()
        path = folder / f"{name}.onnx"
        paths[name] = path
        if path.is_file():
            continue
        dummy = torch.zeros(2, 3, size or 40, size or 52)
        dyn = {0: "batch", 2: "height", 3: "width"} if size is None else {0: "batch"}

        def _export(tmp: Path, net=net, dummy=dummy, dyn=dyn) -> None:
            torch_to_onnx(net, dummy, tmp, "input", net.output_names, dyn, opset=17)

        write_with(path, _export)
    return paths


def prepare_onnx(checkpoint: str | Path) -> dict[str, Path]:
    """The ONNX files of an MTCNN checkpoint, exported on first use into the cache folder (keyed by the
    checkpoint's hash)."""
    from faceembed.files import cache_dir
    from faceembed.models.checkpoint import load_checkpoint
    from faceembed.models.to_onnx import EXPORTER

    path = Path(checkpoint)
    key = hashlib.sha256(path.read_bytes() + EXPORTER.encode()).hexdigest()[:16]  # a new exporter: export again
    folder = cache_dir() / f"mtcnn_onnx_{key}"
    if all((folder / f"{n}.onnx").is_file() for n in ("pnet", "rnet", "onet")):
        return {n: folder / f"{n}.onnx" for n in ("pnet", "rnet", "onet")}
    model, _, _ = load_checkpoint(path, expect_arch="mtcnn")
    return export_mtcnn_onnx(model, folder)


class _OrtNets:
    def __init__(self, paths: dict[str, Path], threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        self.sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                         for k, p in paths.items()}

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})

    def pnet(self, x):
        return self._run("pnet", x)

    def rnet(self, x):
        return self._run("rnet", x)

    def onet(self, x):
        return self._run("onet", x)


class _OpenVinoNets(_OrtNets):
    """OpenVINO f32 for the nets in ``on_openvino``, ONNX Runtime for the others."""

    def __init__(self, paths: dict[str, Path], threads: int, on_openvino: tuple[str, ...] = ("pnet", "rnet", "onet")):
        import openvino as ov

        super().__init__({k: p for k, p in paths.items() if k not in on_openvino}, threads)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": max(1, threads)}
        self.requests = {k: core.compile_model(core.read_model(str(paths[k])), "CPU", config).create_infer_request()
                         for k in on_openvino}

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        if name not in self.requests:
            return super()._run(name, x)
        request = self.requests[name]
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.array(t.data) for t in request.output_tensors]


class MTCNNDetector:
    """MTCNN on one process. ``checkpoint``: a converted MTCNN checkpoint (default: the cached conversion of
    the ``mtcnn`` package's weights, made on first use)."""

    def __init__(self, checkpoint: str | Path | None = None, config: DetectorConfig | None = None,
                 backend: str = "auto", threads: int = 1):
        from faceembed.models.checkpoint import load_checkpoint
        from faceembed.models.mtcnn_weights import mtcnn_checkpoint

        if backend not in DETECT_BACKENDS:
            raise FaceembedError(f"detector backend must be one of {', '.join(DETECT_BACKENDS)}, got {backend!r}")
        self.config = config or DetectorConfig()
        self.backend = backend = resolve_detect_backend(backend)
        path = mtcnn_checkpoint(checkpoint)
        if backend == "torch":
            model, _, _ = load_checkpoint(path, expect_arch="mtcnn")
            self.nets = _TorchNets(model, threads)
        elif backend in ("openvino", "ort+openvino"):
            on_openvino = ("pnet", "rnet", "onet") if backend == "openvino" else ("rnet", "onet")
            self.nets = _OpenVinoNets(prepare_onnx(path), threads, on_openvino)
        else:
            self.nets = _OrtNets(prepare_onnx(path), threads)

    # ---- stages ---------------------------------------------------------------------------------------

    def _pnet(self, norm: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Proposals ``[K, 5]`` per image; images of one size share P-Net calls."""
        c = self.config
        out: list[np.ndarray] = [np.zeros((0, 5), np.float32)] * len(norm)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(norm):
            groups.setdefault(img.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            per_image: list[list[np.ndarray]] = [[] for _ in idx]
            for scale in B.pyramid_scales(h, w, c.min_face_size, c.scale_factor,
                                          min_face_fraction=c.min_face_fraction):
                hs, ws = int(np.ceil(h * scale)), int(np.ceil(w * scale))
                batch = np.stack([cv2.resize(norm[i], (ws, hs), interpolation=cv2.INTER_AREA) for i in idx])
                reg, prob = self.nets.pnet(batch.transpose(0, 3, 1, 2))
                for j in range(len(idx)):
                    cand = B.pnet_boxes(reg[j], prob[j], scale, c.threshold_pnet)
                    if len(cand):
                        per_image[j].append(cand[B.nms(cand[:, :4], cand[:, 4], c.nms_pnet_scale)])
            for j, i in enumerate(idx):
                if per_image[j]:
                    cand = np.concatenate(per_image[j])
                    cand = cand[B.nms(cand[:, :4], cand[:, 4], c.nms_pnet)]
                    out[i] = B.square(cand)
        return out

    def _run_batched(self, fn, crops: np.ndarray) -> list[np.ndarray]:
        bs = self.config.batch_size
        parts = [fn(crops[i:i + bs]) for i in range(0, len(crops), bs)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def _refine(self, norm: Sequence[np.ndarray], boxes: list[np.ndarray], stage: str) -> list[tuple]:
        """R-Net (``stage="rnet"``) or O-Net on every image's boxes in shared batches."""
        c = self.config
        size = 24 if stage == "rnet" else 48
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32))] * len(norm)
        crops = np.concatenate([crop_resize(norm[i], b, size) for i, b in enumerate(boxes) if len(b)])
        outs = self._run_batched(self.nets.rnet if stage == "rnet" else self.nets.onet, crops)
        results = []
        start = 0
        for i, b in enumerate(boxes):
            n = counts[i]
            sl = slice(start, start + n)
            start += n
            if n == 0:
                results.append((np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)))
                continue
            reg, prob = outs[0][sl], outs[-1][sl]
            lms = B.landmarks_to_image(outs[1][sl], b) if stage == "onet" else np.zeros((n, 5, 2), np.float32)
            cand = b.copy()
            cand[:, 4] = prob
            cand = B.regress(cand, reg)
            ok = prob > (c.threshold_rnet if stage == "rnet" else c.threshold_onet)
            cand, lms = cand[ok], lms[ok]
            if stage == "rnet":
                cand = B.square(cand[B.nms(cand[:, :4], cand[:, 4], c.nms_rnet)])
            else:
                keep = B.nms(cand[:, :4], cand[:, 4], c.nms_onet, method="min")
                cand, lms = cand[keep], lms[keep]
            results.append((cand, lms))
        return results

    # ---- public -----------------------------------------------------------------------------------------

    def detect_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in each of ``images`` (uint8 RGB HxWx3), highest score first. R-Net and O-Net crops of all
        images are batched together."""
        norm = [normalize(im) for im in images]
        usable = [i for i, im in enumerate(norm) if min(im.shape[:2]) >= B.PNET_CELL]
        sub = [norm[i] for i in usable]
        proposals = self._pnet(sub)
        r = self._refine(sub, proposals, "rnet")
        o = self._refine(sub, [b for b, _ in r], "onet")
        out: list[list[Face]] = [[] for _ in images]
        for j, i in enumerate(usable):
            h, w = images[i].shape[:2]
            boxes, lms = o[j]
            for b, lm in zip(boxes, lms, strict=True):
                box = np.array([np.clip(b[0], 0, w - 1), np.clip(b[1], 0, h - 1),
                                np.clip(b[2], 0, w - 1), np.clip(b[3], 0, h - 1)], dtype=np.float32)
                out[i].append(Face(box, float(b[4]), lm.astype(np.float32)))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one uint8 RGB image, highest score first."""
        return self.detect_many([image])[0]


def choose_face(faces: Sequence[Face], height: int, width: int, keep: str = "largest") -> Face:
    """The face to keep when an image holds several (``"largest"`` box or nearest the ``"center"``)."""
    return faces[B.pick_face(np.stack([f.box for f in faces]), height, width, keep)]
