"""5-point face alignment as SphereFace and PFE do it: a similarity transform onto a fixed template.

The transform is a non-reflective similarity ``[a -b tx; b a ty]`` fitted by linear least squares.
``method="forward"`` (default) fits image -> template directly: the closed-form Umeyama solution without
reflection, as ``skimage``'s ``SimilarityTransform`` and ``cv2.estimateAffinePartial2D`` (on exact data).
``method="cp2tform"`` is MATLAB's ``cp2tform(src, dst, 'similarity')`` as SphereFace's PyTorch port
(``matlab_cp2tform.get_similarity_transform_for_cv2``) computes it: the least-squares fit *from the
template to the image*, inverted (cp2tform also tries a mirrored fit, which never wins on real faces, so it
is left out). The two differ only through landmark noise; on LFW with MobileFaceNet they give 99.18% and
99.10% (flip-concat, mean subtraction), the published figure being 99.20%. The warp is
``cv2.warpAffine`` with ``INTER_LINEAR`` and a constant 0 border, the call SphereFace's ``alignment()``
makes with OpenCV's defaults.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from faceembed import errors
from faceembed.data.images import read_image_rgb, write_image_rgb
from faceembed.errors import FaceembedError, InputFormatError
from faceembed.files import write_text
from faceembed.report.progress import progress_bar

SimilarityMethod = Literal["forward", "cp2tform"]

#: SphereFace / PFE template in a 96-wide, 112-high crop: eyes, nose tip, mouth corners, as (x, y).
REFERENCE_112x96 = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)
#: The same template centred in a 112x112 crop (every x shifted by +8).
REFERENCE_112x112 = REFERENCE_112x96 + np.array([8.0, 0.0])

#: Mean of LFW's ``lfw_landmark.txt`` points as fractions of the 250x250 image: the fallback "face" for
#: images without landmarks.
MEAN_LFW_LANDMARKS_FRACTION = np.array(
    [[104.67, 112.49], [145.09, 111.73], [124.85, 136.51], [107.60, 157.14], [143.56, 156.73]]
) / 250.0


def reference_points(size: tuple[int, int] = (112, 96)) -> np.ndarray:
    """The 5-point template for an output of ``size = (height, width)``.

    ``(112, 96)`` is the published template, square sizes use the 112x112 variant; other sizes with the
    112:96 or 1:1 aspect ratio are scaled from these.
    """
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if h * 96 == w * 112:
        return REFERENCE_112x96 * (h / 112.0)
    if h == w:
        return REFERENCE_112x112 * (h / 112.0)
    raise ValueError(f"no template for size {size}: use (112, 96), (112, 112) or a multiple")


def _lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares ``[a -b tx; b a ty]`` (3x3 homogeneous) mapping ``src`` onto ``dst`` (closed form)."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    denom = float((s * s).sum())
    if denom <= 1e-12:
        raise InputFormatError("landmarks are degenerate (all points coincide)")
    a = float((s * d).sum()) / denom
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / denom
    tx = md[0] - (a * ms[0] - b * ms[1])
    ty = md[1] - (b * ms[0] + a * ms[1])
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, method: SimilarityMethod = "forward"
) -> np.ndarray:
    """2x3 non-reflective similarity (for ``cv2.warpAffine``) taking points ``src`` (N,2) onto ``dst`` (N,2).

    ``"forward"`` (default) fits ``src -> dst`` by least squares; ``method="cp2tform"`` (SphereFace's
    port of MATLAB) fits ``dst -> src`` by least squares and inverts it. Both are exact on noise-free data.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or s.shape[0] < 2:
        raise ValueError(f"src and dst must both be (N>=2, 2), got {s.shape} and {d.shape}")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise InputFormatError("landmarks are not finite")
    if method == "forward":
        m = _lstsq_similarity(s, d)
    elif method == "cp2tform":
        m = _lstsq_similarity(d, s)
    else:
        raise ValueError(f"method must be 'cp2tform' or 'forward', got {method!r}")
    if abs(np.linalg.det(m[:2, :2])) <= 1e-12:
        raise InputFormatError("landmarks are degenerate (all points coincide)")
    if method == "cp2tform":
        m = np.linalg.inv(m)
    return m[:2].copy()


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: tuple[int, int] = (112, 96),
    method: SimilarityMethod = "forward",
) -> np.ndarray:
    """Warp ``image`` (uint8 HxWx3) so its 5 ``landmarks`` (5,2 as x,y) land on the template of ``size``
    (see :func:`similarity_transform` for ``method``). Returns ``uint8 (size[0], size[1], 3)``.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    m = similarity_transform(pts, reference_points(size), method)
    return cv2.warpAffine(
        image, m, (int(size[1]), int(size[0])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def center_crop_fallback(image: np.ndarray, size: tuple[int, int] = (112, 96)) -> np.ndarray:
    """Crop for an image without landmarks: scale and shift (no rotation) mapping the *average* LFW face
    (mean landmark positions, relative to the image size) onto the template, i.e. a fixed centred crop.

    Good for LFW-like loosely centred photos; for anything else, detect landmarks first.
    """
    h, w = image.shape[:2]
    src = MEAN_LFW_LANDMARKS_FRACTION * np.array([w, h], dtype=np.float64)
    dst = reference_points(size)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    scale = float(((src - ms) * (dst - md)).sum() / ((src - ms) ** 2).sum())
    t = md - scale * ms
    m = np.array([[scale, 0.0, t[0]], [0.0, scale, t[1]]])
    return cv2.warpAffine(
        image, m, (int(size[1]), int(size[0])), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def _align_path(
    image_root: str, rel: str, lm: np.ndarray | None, size: tuple[int, int], method: SimilarityMethod
) -> tuple[np.ndarray, bool]:
    """Read and align one image; returns ``(aligned, used_fallback)``."""
    img = read_image_rgb(os.path.join(image_root, rel))
    if lm is None:
        return center_crop_fallback(img, size), True
    return align_face(img, lm, size, method), False


# ---- parallel drivers -------------------------------------------------------------------------------

def _pool(workers: int):
    """A forked worker pool (no ``__main__`` guard needed in callers' scripts).

    The workers must not call ``cv2.setNumThreads``: in a child forked after the parent has used OpenCV's
    thread pool it deadlocks.
    """
    import multiprocessing as mp

    return mp.get_context("fork").Pool(workers)


def _memory_chunk(args: tuple) -> tuple[int, np.ndarray, int]:
    start, image_root, items, size, method = args
    out = np.empty((len(items), size[0], size[1], 3), dtype=np.uint8)
    n_fallback = 0
    for i, (rel, lm) in enumerate(items):
        out[i], fb = _align_path(image_root, rel, lm, size, method)
        n_fallback += fb
    return start, out, n_fallback


def _chunks(n: int, workers: int, max_chunk: int = 256) -> list[tuple[int, int]]:
    step = max(1, min(max_chunk, -(-n // (workers * 4))))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def align_images_in_memory(
    image_root: str | Path,
    landmarks: dict[str, np.ndarray],
    relpaths: Sequence[str],
    size: tuple[int, int] = (112, 96),
    workers: int | None = None,
    progress: bool = False,
    method: SimilarityMethod = "forward",
) -> np.ndarray:
    """Align ``relpaths`` (fallback crop where a landmark is missing) into ``uint8 [N, H, W, 3]`` RGB.

    Same per-image code as :func:`align_dataset`; any unreadable image raises.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    size = (int(size[0]), int(size[1]))
    out = np.empty((len(relpaths), size[0], size[1], 3), dtype=np.uint8)
    root = str(image_root)
    tasks = [(s, root, [(r, landmarks.get(r)) for r in relpaths[s:e]], size, method)
             for s, e in _chunks(len(relpaths), workers)]
    prog, task = progress_bar(progress, len(relpaths), "align")
    with prog:
        if workers == 1 or len(tasks) <= 1:
            for t in tasks:
                start, arr, _ = _memory_chunk(t)
                out[start:start + len(arr)] = arr
                prog.advance(task, len(arr))
        else:
            with _pool(workers) as pool:
                for start, arr, _ in pool.imap_unordered(_memory_chunk, tasks):
                    out[start:start + len(arr)] = arr
                    prog.advance(task, len(arr))
    return out


@dataclass
class AlignSummary:
    """Outcome of :func:`align_dataset`.

    ``aligned``: images written now from landmarks; ``fallback``: written with the centre-crop fallback
    (no landmarks); ``skipped``: outputs already present and valid (resumed run); ``failed``:
    ``(relpath, reason)`` of images that could not be read (only with ``on_error="skip"``).
    """

    aligned: int = 0
    fallback: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def output_relpath(relpath: str) -> str:
    """Output name of an aligned image: same folder and stem, ``.png``."""
    return str(Path(relpath).with_suffix(".png").as_posix())


def _valid_png(path: str, size: tuple[int, int]) -> bool:
    """Cheap validity check of an existing output: PNG signature and IHDR width/height."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return False
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (h, w) == size


def align_one(
    image_root: str, out_dir: str, rel: str, lm: np.ndarray | None, size: tuple[int, int],
    method: SimilarityMethod = "forward",
) -> tuple[str, str, str, str]:
    """Align one image and write ``out_dir/output_relpath(rel)``; never raises a :class:`FaceembedError`.

    Returns ``(relpath, status, reason, error class)`` with status ``aligned``, ``fallback`` or ``failed``
    (the per-image step of every engine: :func:`align_dataset` and the Ray engine)."""
    try:
        img, fb = _align_path(image_root, rel, lm, size, method)
        write_image_rgb(os.path.join(out_dir, output_relpath(rel)), img)
        return rel, "fallback" if fb else "aligned", "", ""
    except FaceembedError as exc:
        return rel, "failed", exc.one_line(), type(exc).__name__


def _disk_chunk(args: tuple) -> list[tuple[str, str, str, str]]:
    """Align and write a chunk with :func:`align_one`."""
    image_root, out_dir, items, size, method = args
    return [align_one(image_root, out_dir, rel, lm, size, method) for rel, lm in items]


def pending_images(relpaths: Sequence[str], out_dir: str | Path, size: tuple[int, int]) -> tuple[list[str], int]:
    """The images still to align (resume) and how many already have a valid output."""
    todo = [rel for rel in relpaths if not _valid_png(str(Path(out_dir) / output_relpath(rel)), size)]
    return todo, len(relpaths) - len(todo)


def landmarks_digest(landmarks: dict[str, np.ndarray], relpaths: Sequence[str]) -> str:
    """SHA-256 of the landmarks of ``relpaths`` (what an alignment depends on)."""
    import hashlib

    h = hashlib.sha256()
    for rel in relpaths:
        pts = landmarks.get(rel)
        h.update(rel.encode() + (np.asarray(pts, np.float64).tobytes() if pts is not None else b"none"))
    return h.hexdigest()


def alignment_record(image_root: str | Path, relpaths: Sequence[str], o: AlignOptions,
                     landmarks_source: dict[str, Any]) -> dict[str, Any]:
    """What an ``align`` output folder is made from (:mod:`faceembed.fingerprint`)."""
    from faceembed.fingerprint import inputs_digest

    return {"command": "align", "size": list(o.size), "method": o.method, "landmarks": landmarks_source,
            "images": inputs_digest(Path(image_root) / r for r in relpaths)}


def claim_alignment(image_root: str | Path, landmarks: dict[str, np.ndarray], relpaths: Sequence[str],
                    out_dir: Path, o: AlignOptions, landmarks_source: dict[str, Any] | None) -> tuple[list[str], int]:
    """Claim ``out_dir`` for this alignment (another run's folder is refused unless ``o.overwrite``) and return
    the images still to align and how many are done."""
    from faceembed.fingerprint import claim_folder

    source = landmarks_source or {"sha256": landmarks_digest(landmarks, relpaths)}
    claim_folder(out_dir, alignment_record(image_root, relpaths, o, source), o.overwrite)
    return pending_images(relpaths, out_dir, o.size)


def record_results(summary: AlignSummary, results: Sequence[tuple[str, str, str, str]], on_error: str) -> None:
    """Count :func:`align_one` results into ``summary``; with ``on_error="stop"`` raise the first failure."""
    for rel, status, reason, kind in results:
        if status == "failed":
            if on_error == "stop":
                raise getattr(errors, kind, FaceembedError)(f"cannot align {rel}: {reason}")
            summary.failed.append((rel, reason))
        elif status == "fallback":
            summary.fallback += 1
        else:
            summary.aligned += 1


def finish_alignment(summary: AlignSummary, relpaths: Sequence[str], out_dir: str | Path,
                     contact_sheet: bool = True) -> None:
    """Write ``skipped.txt`` (failures) and the contact sheet of up to 64 outputs."""
    out_dir = Path(out_dir)
    if summary.failed:
        write_text(out_dir / "skipped.txt", "".join(f"{r}\t{why}\n" for r, why in sorted(summary.failed)))
    if contact_sheet:
        done = [r for r in relpaths if (out_dir / output_relpath(r)).is_file()]
        if done:
            from faceembed.report.contact_sheet import make_contact_sheet

            pick = [done[i] for i in np.linspace(0, len(done) - 1, min(64, len(done))).round().astype(int)]
            make_contact_sheet([read_image_rgb(out_dir / output_relpath(r)) for r in pick],
                               out_dir / "contact_sheet.png")


@dataclass(frozen=True)
class AlignOptions:
    """How ``align`` runs, the same for the local and the Ray engine: output ``size`` (height, width),
    ``on_error`` stop | skip, a ``contact_sheet`` PNG, the similarity ``method``, progress bars."""

    size: tuple[int, int] = (112, 96)
    on_error: str = "stop"
    contact_sheet: bool = True
    method: SimilarityMethod = "forward"
    progress: bool = True
    overwrite: bool = False

    def check(self) -> AlignOptions:
        """One clear error for a bad choice; the size as two ints."""
        if self.on_error not in ("stop", "skip"):
            raise FaceembedError(f"--on-error must be 'stop' or 'skip', not {self.on_error!r}")
        if self.method not in ("forward", "cp2tform"):
            raise FaceembedError(f"method must be 'forward' or 'cp2tform', not {self.method!r}")
        return replace(self, size=(int(self.size[0]), int(self.size[1])))


def align_dataset(image_root: str | Path, landmarks: dict[str, np.ndarray], relpaths: Sequence[str],
                  out_dir: str | Path, workers: int | None = None, landmarks_source: dict[str, Any] | None = None,
                  **options: Any) -> AlignSummary:
    """Align ``relpaths`` under ``image_root`` into ``out_dir/Name/Name_0001.png`` (lossless, atomic writes);
    ``options`` are :class:`AlignOptions` fields; ``landmarks_source`` says where the landmarks came from for the
    folder's run record (default: a digest of them).

    Resumable: outputs that already exist with the right PNG header and size are not redone. Images without
    landmarks use :func:`center_crop_fallback`. With ``on_error="stop"`` the first unreadable image raises
    its error; with ``"skip"`` failures are listed in ``out_dir/skipped.txt`` (``relpath<TAB>reason``).
    A contact sheet of up to 64 outputs is written to ``out_dir/contact_sheet.png``.
    """
    o = AlignOptions(**options).check()
    size, method = o.size, o.method
    t0 = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    out_dir = Path(out_dir)
    summary = AlignSummary()
    todo, summary.skipped = claim_alignment(image_root, landmarks, relpaths, out_dir, o, landmarks_source)
    tasks = [(str(image_root), str(out_dir), [(r, landmarks.get(r)) for r in todo[s:e]], size, method)
             for s, e in _chunks(len(todo), workers, max_chunk=64)]
    prog, task = progress_bar(o.progress, len(todo), "align")

    def _consume(results: list[tuple[str, str, str, str]]) -> None:
        record_results(summary, results, o.on_error)
        prog.advance(task, len(results))

    with prog:
        if workers == 1 or len(tasks) <= 1:
            for t in tasks:
                _consume(_disk_chunk(t))
        else:
            with _pool(workers) as pool:
                for res in pool.imap_unordered(_disk_chunk, tasks):
                    _consume(res)
    finish_alignment(summary, relpaths, out_dir, o.contact_sheet)
    summary.seconds = time.perf_counter() - t0
    return summary
