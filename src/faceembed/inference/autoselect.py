"""``--backend auto``: the fastest accurate backend and precision for one model file on this machine.

Candidates are what the file can run as: an fp32 ONNX file on ONNX Runtime (fp32) and OpenVINO (fp32 and
bf16 hints); an int8 or fp16 file on ONNX Runtime and OpenVINO at the file's precision; a checkpoint on
PyTorch (fp32 and bf16). Each candidate is timed on the same batch (real inputs when the caller gives
``sample``, as ``infer`` does with its first input file; else a fixed pseudo-random batch in the pixel
range); one whose first output has cosine < ``COSINE_MIN`` on any row to the first candidate's (ONNX
Runtime, or PyTorch fp32, on the same file) is rejected. The choice is cached per (file hash, machine,
threads, batch) in ``$FACEEMBED_CACHE_DIR/auto_backend.json`` (default ``~/.cache/faceembed``), so only the
first run measures; ``faceembed bench`` writes the same cache for the files it measures.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import BackendUnavailableError, FaceembedError
from faceembed.files import file_sha256, write_json
from faceembed.inference.backends import Backend, load_backend, onnx_info

COSINE_MIN = 0.999
CACHE_NAME = "auto_backend.json"


def cache_path() -> Path:
    """Where auto choices are kept: ``$FACEEMBED_CACHE_DIR`` or ``~/.cache/faceembed``."""
    root = os.environ.get("FACEEMBED_CACHE_DIR") or Path.home() / ".cache" / "faceembed"
    return Path(root) / CACHE_NAME


def machine_id() -> str:
    """CPU model and core count: a choice measured on one machine is not reused on another."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} x{os.cpu_count()}"


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256."""
    return file_sha256(path)[:16]


def cache_key(path: str | Path, threads: int | None, batch: int) -> str:
    """Key of one choice: file content, machine, threads and batch size."""
    return f"{file_hash(path)}|{machine_id()}|threads={threads or os.cpu_count()}|batch={batch}"


def _read_cache() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs one measurement


def record_choice(path: str | Path, threads: int | None, batch: int, choice: dict[str, Any]) -> None:
    """Store ``choice`` (``backend``, ``precision``, ``ms_per_image``, ...) for ``path`` in the cache."""
    cache = _read_cache()
    cache[cache_key(path, threads, batch)] = {**choice, "model": str(path), "time": time.strftime("%F %T")}
    write_json(cache_path(), cache)


def cached_choice(path: str | Path, threads: int | None, batch: int) -> dict[str, Any] | None:
    """The cached choice for ``path`` on this machine, or None."""
    return _read_cache().get(cache_key(path, threads, batch))


def candidates(path: str | Path, precision: str | None = None) -> list[tuple[str, str]]:
    """(backend, precision) pairs the file can run as, optionally restricted to one precision."""
    path = Path(path)
    if path.suffix != ".onnx":
        pairs = [("torch", "fp32"), ("torch", "bf16")]
    else:
        own = onnx_info(path).precision
        pairs = [("ort", own), ("openvino", own)]
        if own == "fp32":
            pairs.append(("openvino", "bf16"))
    try:
        import openvino  # noqa: F401
    except ImportError:
        pairs = [p for p in pairs if p[0] != "openvino"]
    return [p for p in pairs if precision is None or p[1] == precision]


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    from faceembed.evaluation.scores import cosine_scores  # NaN or Inf raises: the candidate is rejected

    return float(cosine_scores(a.reshape(len(a), -1), b.reshape(len(b), -1)).min())


def _sample(item_shape: tuple[int, ...], batch: int) -> np.ndarray:
    """A fixed pseudo-image batch in the files' value range (0..255) when no real input is given."""
    return np.random.default_rng(0).uniform(0, 255, size=(batch, *item_shape)).astype(np.float32)


Sample = np.ndarray | Callable[[tuple[int, ...]], np.ndarray | None] | None


def measure_choice(path: str | Path, threads: int | None = None, batch: int = 32, precision: str | None = None,
                   sample: Sample = None, min_seconds: float = 0.3) -> dict[str, Any]:
    """Time every candidate on one batch and return the fastest accurate one (with every measurement).

    ``sample``: real input rows, or a function of the model's item shape returning them (called only when
    a measurement is needed; None falls back to the pseudo-random batch)."""
    from faceembed.inference.timing import time_calls

    options = candidates(path, precision)
    if not options:
        raise BackendUnavailableError(f"no backend runs this file at precision {precision}", path)
    reference_backend = load_backend(path, options[0][0], options[0][1], threads)
    if callable(sample):
        sample = sample(reference_backend.item_shape)
    given = sample is not None and len(sample) > 0
    x = sample if given else _sample(reference_backend.item_shape, batch)
    x = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])), dtype=np.float32)
    reference = reference_backend.run(x)[0]
    tried: list[dict[str, Any]] = []
    for backend, prec in options:
        try:
            be = reference_backend if (backend, prec) == options[0] else load_backend(path, backend, prec, threads)
            cosine = _min_cosine(be.run(x)[0], reference)
            ms = float(np.median(time_calls(be, x, min_seconds=min_seconds, min_runs=5)))
        except FaceembedError as exc:
            tried.append({"backend": backend, "precision": prec, "error": exc.one_line()})
            continue
        tried.append({"backend": backend, "precision": prec, "ms_per_image": ms / batch, "min_cosine": cosine,
                      "accuracy_ok": cosine >= COSINE_MIN})
    ok = [t for t in tried if t.get("accuracy_ok")]
    if not ok:
        raise BackendUnavailableError("no candidate backend reproduces the fp32 outputs", path)
    best = min(ok, key=lambda t: t["ms_per_image"])
    return {"backend": best["backend"], "precision": best["precision"], "ms_per_image": best["ms_per_image"],
            "source": "measured by --backend auto", "inputs": "given" if given else "pseudo-random",
            "candidates": tried}


def choose_backend(path: str | Path, threads: int | None = None, batch: int = 32, precision: str | None = None,
                   sample: Sample = None) -> dict[str, Any]:
    """The cached choice for ``path`` on this machine, measuring (and caching) it on first use."""
    hit = cached_choice(path, threads, batch)
    if hit is not None and (precision is None or hit["precision"] == precision):
        return hit
    choice = measure_choice(path, threads, batch, precision, sample)
    record_choice(path, threads, batch, choice)
    return choice


def resolve_backend(path: str | Path, backend: str, precision: str | None, threads: int | None = None,
                    batch: int = 32, sample: Sample = None) -> tuple[str, str | None]:
    """The (backend, precision) pair to open ``path`` with: ``auto`` becomes the cached or freshly measured
    fastest accurate pair on this machine; any other backend is returned as given. Drivers call this once and
    hand the pair to their workers, so a worker never measures on its own."""
    if backend != "auto":
        return backend, precision
    choice = choose_backend(path, threads, batch, precision, sample)
    return choice["backend"], choice["precision"]


def load_auto(path: str | Path, threads: int | None = None, batch: int = 32, precision: str | None = None,
              sample: Sample = None) -> Backend:
    """Open ``path`` with the backend ``choose_backend`` picks."""
    name, prec = resolve_backend(path, "auto", precision, threads, batch, sample)
    return load_backend(path, name, prec, threads)
