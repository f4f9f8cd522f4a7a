"""Align photo folders on every core: in memory (``align_images_in_memory``) or into PNG files
(``align_dataset``, resumable, with a run record), the per-image step shared with the Ray engine
(``align_one``). The geometry is in :mod:`faceembed.faces.align`."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceembed import errors
from faceembed.data.images import read_image_rgb, write_image_rgb
from faceembed.errors import FaceembedError
from faceembed.faces.align import SimilarityMethod, align_path
from faceembed.files import write_text
from faceembed.report.progress import progress_bar


def _pool(workers: int):
    """A forked worker pool (no ``__main__`` guard needed in callers' scripts).

    The workers must not call ``cv2.setNumThreads``: in a child forked after the parent has used OpenCV's
    thread pool it deadlocks.
    """
    import multiprocessing as mp

    return mp.get_context("fork").Pool(workers)


def _memory_chunk(args: tuple) -> tuple[int, np.ndarray, int]:
    start, image_root, items, size, method, template = args
    out = np.empty((len(items), size[0], size[1], 3), dtype=np.uint8)
    n_fallback = 0
    for i, (rel, lm) in enumerate(items):
        out[i], fb = align_path(image_root, rel, lm, size, method, template)
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
    template: str | None = None,
) -> np.ndarray:
    """Align ``relpaths`` (fallback crop where a landmark is missing) into ``uint8 [N, H, W, 3]`` RGB, onto
    ``template`` (a model card's; default: SphereFace's, 112x112 ArcFace's for square sizes).

    Same per-image code as :func:`align_dataset`; any unreadable image raises.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    size = (int(size[0]), int(size[1]))
    out = np.empty((len(relpaths), size[0], size[1], 3), dtype=np.uint8)
    root = str(image_root)
    tasks = [(s, root, [(r, landmarks.get(r)) for r in relpaths[s:e]], size, method, template)
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
    method: SimilarityMethod = "forward", template: str | None = None,
) -> tuple[str, str, str, str]:
    """Align one image and write ``out_dir/output_relpath(rel)``; never raises a :class:`FaceembedError`.

    Returns ``(relpath, status, reason, error class)`` with status ``aligned``, ``fallback`` or ``failed``
    (the per-image step of every engine: :func:`align_dataset` and the Ray engine)."""
    try:
        img, fb = align_path(image_root, rel, lm, size, method, template)
        write_image_rgb(os.path.join(out_dir, output_relpath(rel)), img)
        return rel, "fallback" if fb else "aligned", "", ""
    except FaceembedError as exc:
        return rel, "failed", exc.one_line(), type(exc).__name__


def _disk_chunk(args: tuple) -> list[tuple[str, str, str, str]]:
    """Align and write a chunk with :func:`align_one`."""
    image_root, out_dir, items, size, method, template = args
    return [align_one(image_root, out_dir, rel, lm, size, method, template) for rel, lm in items]


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

    return {"command": "align", "size": list(o.size), "method": o.method, "template": o.template,
            "landmarks": landmarks_source,
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
    template: str | None = None  # a model card's template (default: SphereFace's, ArcFace's for square sizes)

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
    tasks = [(str(image_root), str(out_dir), [(r, landmarks.get(r)) for r in todo[s:e]], size, method, o.template)
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
