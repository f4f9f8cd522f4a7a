"""``--backend auto``: the fastest accurate backend and precision for one model file on this machine.

Candidates are what the file can run as: an fp32 ONNX file on ONNX Runtime (fp32) and OpenVINO (fp32 and
bf16 hints); an int8 or fp16 file on ONNX Runtime and OpenVINO at the file's precision; a checkpoint on
PyTorch (fp32 and bf16). Each candidate is timed on the same batch (real inputs when the caller gives
``sample``, as ``infer`` does with its first input file; else a fixed pseudo-random batch in the pixel
range); one whose first output has cosine < ``COSINE_MIN`` on any row to the first candidate's (ONNX
Runtime, or PyTorch fp32, on the same file) is rejected. The choice is cached per (file hash, machine,
threads, batch) in ``auto_backend.json`` in faceembed's cache folder (``$FACEEMBED_CACHE``, default
``~/.cache/faceembed``), so only the first run measures; ``faceembed bench`` writes the same cache for the files
it measures.

:func:`choose_model_config` does the same for the photo paths (``FaceModel.load`` without a backend): a
checkpoint is also exported once to an ONNX twin in the cache, so ONNX Runtime and OpenVINO compete with
PyTorch on it, every candidate checked against PyTorch fp32 on the checkpoint itself.
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
    """Where auto choices are kept: ``auto_backend.json`` in :func:`faceembed.files.cache_dir`."""
    from faceembed.files import cache_dir

    return cache_dir() / CACHE_NAME


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


# ---- photo paths: one model file (checkpoint or ONNX) -> its fastest accurate (file, backend, precision) ----------

MODEL_BATCH = 16  # the photo paths' measurement batch: cheap (about a second per candidate) and done once


def onnx_twin(checkpoint: str | Path) -> Path:
    """A faceembed checkpoint exported once to ONNX (NHWC input, dynamic batch, the checkpoint's card) in the
    cache folder, keyed by the checkpoint's hash; the same file on every later call (found without torch)."""
    from faceembed.files import cache_dir, write_with

    checkpoint = Path(checkpoint)
    out = cache_dir() / "onnx_twins" / f"{checkpoint.stem}-{file_hash(checkpoint)}.onnx"
    if out.is_file():
        return out
    import onnx
    import torch

    from faceembed.models.card_io import card_to_onnx, read_card
    from faceembed.models.checkpoint import load_checkpoint
    from faceembed.models.to_onnx import torch_to_onnx

    model, spec, _ = load_checkpoint(checkpoint)
    card = read_card(checkpoint).replace(layout="NHWC", batch=None, input_name=spec.input_name,
                                         source=checkpoint.name)

    class _NHWC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()

        def forward(self, x):
            return tuple(self.model(x.permute(0, 3, 1, 2)))

    def _export(tmp: Path) -> None:
        torch_to_onnx(_NHWC().eval(), torch.zeros(2, *spec.nhwc), tmp, spec.input_name, spec.output_names,
                      {0: "batch"}, 17)
        proto = onnx.load(str(tmp))
        for key, value in (("faceembed.precision", "fp32"), ("faceembed.input", json.dumps(spec.to_dict()))):
            proto.metadata_props.add(key=key, value=value)
        card_to_onnx(proto, card)
        onnx.save(proto, str(tmp))

    out.parent.mkdir(parents=True, exist_ok=True)
    write_with(out, _export)
    return out


def model_candidates(path: str | Path) -> list[tuple[Path, str, str]]:
    """(file, backend, precision) the photo paths may run ``path`` as; the first is the accuracy reference."""
    path = Path(path)
    if path.suffix != ".onnx":
        twin = onnx_twin(path)
        return [(path, b, p) for b, p in candidates(path)] + [(twin, b, p) for b, p in candidates(twin)]
    return [(path, b, p) for b, p in candidates(path)]


def measure_model_config(path: str | Path, threads: int | None, sample: np.ndarray, batch: int = MODEL_BATCH,
                         min_seconds: float = 0.15) -> dict[str, Any]:
    """Time every :func:`model_candidates` entry on ``sample`` (preprocessed rows) and pick the fastest whose
    rows all keep cosine >= :data:`COSINE_MIN` to the reference (PyTorch fp32 on a checkpoint)."""
    from faceembed.inference.timing import time_calls

    x = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])), dtype=np.float32)
    reference = None
    tried: list[dict[str, Any]] = []
    for file, backend, prec in model_candidates(path):
        entry: dict[str, Any] = {"file": str(file), "backend": backend, "precision": prec}
        try:
            be = load_backend(file, backend, prec, threads)
            out = be.run(x)[0]
            reference = out if reference is None else reference
            cosine = _min_cosine(out, reference)
            ms = float(np.median(time_calls(be, x, warmup=2, min_runs=3, min_seconds=min_seconds)))
        except FaceembedError as exc:
            tried.append({**entry, "error": exc.one_line()})
            continue
        tried.append({**entry, "ms_per_image": ms / batch, "min_cosine": cosine, "accuracy_ok": cosine >= COSINE_MIN})
    ok = [t for t in tried if t.get("accuracy_ok")]
    if not ok:
        raise BackendUnavailableError("no candidate backend reproduces the fp32 outputs", path)
    best = min(ok, key=lambda t: t["ms_per_image"])
    return {"file": best["file"], "backend": best["backend"], "precision": best["precision"],
            "ms_per_image": best["ms_per_image"], "source": "measured for the photo paths", "candidates": tried}


def choose_model_config(path: str | Path, threads: int | None, sample: Callable[[], np.ndarray],
                        batch: int = MODEL_BATCH) -> dict[str, Any]:
    """The cached photo-path configuration of ``path`` on this machine (``file``, ``backend``, ``precision``),
    measured on ``sample()`` and cached on first use; a cached entry whose file has gone is measured again."""
    key = f"photos|{cache_key(path, threads, batch)}"
    hit = _read_cache().get(key)
    if hit is not None and Path(hit.get("file", "")).is_file():
        return hit
    choice = measure_model_config(path, threads, sample(), batch)
    cache = _read_cache()
    cache[key] = {**choice, "model": str(path), "time": time.strftime("%F %T")}
    write_json(cache_path(), cache)
    return cache[key]
