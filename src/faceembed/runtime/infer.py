"""Batch inference over tensor files, the open replacement of the reference batch-inference tool.

One model call per input file (or per ``batch`` items of it), one output file per input file and model
output (``NAME_output_{k}.{bin|txt|npy}``), latency statistics excluding warm-up. Resumable: an input whose
outputs all exist (outputs are written atomically, so existing means complete) is skipped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.data.tensorfiles import (
    list_input_files,
    output_name,
    read_bin,
    read_manifest,
    read_npy,
    read_text_tensor,
    write_output,
)
from faceembed.errors import FaceembedError, NonFiniteError
from faceembed.files import remove_stale_temps, write_json, write_text
from faceembed.runtime.backends import Backend, load_backend

SUMMARY = "infer_summary.json"
OUTPUTS = "outputs.json"
SKIPPED = "skipped.txt"


@dataclass
class InferSummary:
    """What ``infer`` did and how fast (latencies in milliseconds, excluding warm-up)."""

    model: str
    backend: str
    precision: str
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    images: int = 0
    calls: int = 0
    latency_ms_per_batch: dict[str, float] = field(default_factory=dict)
    latency_ms_per_image: float | None = None
    throughput_images_per_s: float | None = None
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(times_ms: list[float]) -> dict[str, float]:
    """Mean, median, p90 and p99 of per-call latencies."""
    if not times_ms:
        return {}
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "mean": float(t.mean()),
        "median": float(np.median(t)),
        "p90": float(np.percentile(t, 90)),
        "p99": float(np.percentile(t, 99)),
        "count": int(t.size),
    }


def read_input_file(path: Path, item_shape: tuple[int, ...], manifest: dict | None) -> np.ndarray:
    """Read one input tensor file as float32 ``[N, *item_shape]`` (manifest shapes win when present)."""
    if path.suffix == ".npy":
        arr = read_npy(path)
        if arr.ndim == len(item_shape):
            arr = arr[None]
        return arr
    if path.suffix == ".txt":
        return read_text_tensor(path).astype(np.float32).reshape(-1, *item_shape)
    count = None
    dtype = "float32"
    if manifest is not None:
        entry = next((f for f in manifest["files"] if f.get("name") == path.name), None)
        count = entry.get("count") if entry else None
        dtype = manifest["dtype"]
        item_shape = tuple(manifest["item_shape"])
    return read_bin(path, dtype, item_shape, count)


def _outputs_complete(out_dir: Path, input_file: Path, n_outputs: int, outfmt: str) -> bool:
    return all((out_dir / output_name(input_file.name, k, outfmt)).is_file() for k in range(n_outputs))


def _timed_run(
    backend: Backend, batch: np.ndarray, chunk: int | None, loop: int, times: list[float]
) -> list[np.ndarray]:
    """Run ``batch`` (in chunks of ``chunk``) ``loop`` times, timing each model call; keep the first results."""
    chunk = chunk or len(batch)
    results: list[list[np.ndarray]] = []
    for rep in range(loop):
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            t0 = time.perf_counter()
            outs = backend.run(part)
            times.append((time.perf_counter() - t0) * 1e3)
            if rep == 0:
                results.append(outs)
    return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]


def check_finite(outputs: list[np.ndarray], names: list[str], source: Path) -> None:
    """Refuse NaN or Inf in model outputs: they must never be scored silently."""
    for name, arr in zip(names, outputs, strict=True):
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise NonFiniteError(f"output {name!r} has {bad} NaN/Inf values", source)


def infer_files(
    model: str | Path,
    inputs: str | Path,
    output_dir: str | Path,
    outfmt: str = "BIN",
    batch: int | None = None,
    loop: int = 1,
    threads: int | None = None,
    provider: str = "cpu",
    backend: str = "ort",
    precision: str | None = None,
    warmup: int = 2,
    on_error: str = "stop",
    progress: bool = True,
    backend_obj: Backend | None = None,
) -> InferSummary:
    """Run ``model`` over every input tensor file and write its outputs into ``output_dir``.

    ``inputs`` is a folder (all its ``.bin``/``.npy``/``.txt`` files but labels, in lexicographic order) or a
    comma-separated list of files. ``on_error="skip"`` records bad inputs in ``skipped.txt`` and goes on.
    Returns the summary, also written to ``output_dir/infer_summary.json``.
    """
    from rich.progress import Progress

    outfmt = outfmt.upper()
    if on_error not in ("stop", "skip"):
        raise FaceembedError(f"--on-error must be 'stop' or 'skip', not {on_error!r}")
    if not 1 <= loop <= 100:
        raise FaceembedError(f"--loop must be between 1 and 100, not {loop}")
    be = backend_obj or load_backend(model, backend, precision, threads, provider)
    files = list_input_files(inputs)
    manifest = read_manifest(files[0].parent)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    summary = InferSummary(str(model), be.name, be.precision)
    times: list[float] = []
    warm = warmup
    file_records = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("infer", total=len(files))
        for path in files:
            bar.advance(task)
            if _outputs_complete(out_dir, path, len(be.output_names), outfmt):
                summary.files_skipped += 1
                file_records.append({"input": path.name, "skipped": True, **_items_of(manifest, path)})
                continue
            try:
                data = read_input_file(path, be.item_shape, manifest)
                while warm > 0:  # warm-up calls are never timed
                    be.run(data[: batch or len(data)])
                    warm -= 1
                outputs = _timed_run(be, data, batch, loop, times)
                check_finite(outputs, be.output_names, path)
            except FaceembedError as exc:
                if on_error == "stop":
                    raise
                summary.files_failed += 1
                summary.failed.append(f"{path.name}\t{exc.one_line()}")
                continue
            for k, arr in enumerate(outputs):
                write_output(out_dir / output_name(path.name, k, outfmt), arr, outfmt)
            summary.files_done += 1
            summary.images += len(data)
            file_records.append(
                {"input": path.name, "count": int(len(data)), "shapes": [list(o.shape) for o in outputs],
                 **_items_of(manifest, path)}
            )
    _finish_summary(summary, times, loop)
    if summary.failed:
        write_text(out_dir / SKIPPED, "".join(line + "\n" for line in summary.failed))
    write_json(
        out_dir / OUTPUTS,
        {
            "format": "faceembed-outputs",
            "version": 1,
            "outfmt": outfmt,
            "model": str(model),
            "outputs": [
                {"index": k, "name": n, "dtype": "float32", "item_shape": list(s) if s else None}
                for k, (n, s) in enumerate(zip(be.output_names, _item_shapes(be), strict=True))
            ],
            "files": file_records,
        },
    )
    write_json(out_dir / SUMMARY, summary.to_dict())
    return summary


def _items_of(manifest: dict | None, path: Path) -> dict[str, Any]:
    """The input manifest's item names for this file (e.g. LFW image paths), carried into outputs.json."""
    if manifest is None:
        return {}
    entry = next((f for f in manifest["files"] if f.get("name") == path.name), {})
    return {"items": entry["items"]} if "items" in entry else {}


def _item_shapes(be: Backend) -> list:
    return list(getattr(be, "output_item_shapes", [None] * len(be.output_names)))


def _finish_summary(summary: InferSummary, times: list[float], loop: int) -> None:
    """Per-call statistics, and per-image latency / throughput over every timed image (``loop`` runs each)."""
    summary.calls = len(times)
    summary.latency_ms_per_batch = latency_stats(times)
    timed_images = summary.images * loop
    if times and timed_images:
        summary.latency_ms_per_image = sum(times) / timed_images
        summary.throughput_images_per_s = 1e3 / summary.latency_ms_per_image
