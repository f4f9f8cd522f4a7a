"""Batch inference over tensor files, the open replacement of the reference batch-inference tool.

One model call per input file (or per ``batch`` items of it), one output file per input file and model
output (``NAME_output_{k}.{bin|txt|npy}``), latency statistics excluding warm-up. Resumable: an input whose
outputs all exist (outputs are written atomically, so existing means complete) is skipped.

The per-file work (read, warm-up, timed model calls, finite check, write) lives in :class:`FileRunner` and
the reports in :func:`write_reports`; the local engine here and the Ray engine (``engines/ray/session.py``)
both call them, so the two write byte-identical outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.batch.infer_report import (
    OUTPUTS,
    SKIPPED,
    STAGES,
    SUMMARY,
    FileResult,
    InferSummary,
    finish_summary,
    item_shapes,
    output_roles,
)
from faceembed.data.tensorfiles import (
    list_input_files,
    output_name,
    read_bin,
    read_listed_bin,
    read_manifest,
    read_npy,
    read_text_tensor,
    write_output,
)
from faceembed.errors import FaceembedError, MissingInputError, NonFiniteError, ShapeMismatchError
from faceembed.files import remove_stale_temps, write_json, write_text
from faceembed.inference.backends import Backend, load_backend


def read_input_file(path: Path, item_shape: tuple[int, ...], manifest: dict | None) -> np.ndarray:
    """Read one input tensor file as float32 ``[N, *item_shape]`` (manifest shapes win when present)."""
    if path.suffix == ".npy":
        arr = read_npy(path)
        if arr.ndim == len(item_shape):
            arr = arr[None]
        return arr
    if path.suffix == ".txt":
        values = read_text_tensor(path).astype(np.float32)
        per_item = int(np.prod(item_shape))
        if values.size % per_item:
            raise ShapeMismatchError(f"{values.size} numbers are no whole number of items of shape "
                                     f"{list(item_shape)} ({per_item} numbers each)", path)
        return values.reshape(-1, *item_shape)
    if manifest is not None:
        return read_listed_bin(path, manifest)
    return read_bin(path, "float32", item_shape, None)


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


class FileRunner:
    """Runs input files one at a time through a loaded backend and writes their outputs into ``out_dir``.

    The first file run is preceded by ``warmup`` untimed calls. Both engines use this class, one runner per
    worker, so every file goes through exactly the same calls whichever engine runs it.
    """

    def __init__(
        self,
        backend: Backend,
        out_dir: str | Path,
        outfmt: str = "BIN",
        batch: int | None = None,
        loop: int = 1,
        warmup: int = 2,
        manifest: dict | None = None,
    ):
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.outfmt = outfmt.upper()
        self.batch, self.loop, self._warm = batch, loop, warmup
        self.manifest = manifest
        self._entries = {f.get("name"): f for f in manifest["files"]} if manifest else {}

    def complete(self, path: Path) -> bool:
        """Whether every output of ``path`` exists (written atomically, so existing means complete)."""
        n = len(self.backend.output_names)
        return all((self.out_dir / output_name(path.name, k, self.outfmt)).is_file() for k in range(n))

    def entry(self, path: Path) -> dict[str, Any]:
        """The manifest's entry for ``path`` (empty without a manifest or entry)."""
        return self._entries.get(path.name, {})

    def run(self, path: Path, entry: dict[str, Any] | None = None) -> FileResult:
        """Read, run and write one input file; raises the file's :class:`FaceembedError` when it is bad.

        ``entry`` is the file's manifest entry when the runner holds only the manifest's header (Ray workers
        get each file's entry with the file, not the whole manifest).
        """
        t0 = time.perf_counter()
        manifest = None
        if self.manifest is not None:  # only this file's entry: no scan of a long manifest per file
            entry = entry if entry is not None else self.entry(path)
            manifest = {**self.manifest, "files": [entry] if entry else []}
        data = read_input_file(path, self.backend.item_shape, manifest)
        t1 = time.perf_counter()
        while self._warm > 0:  # warm-up calls are never timed
            self.backend.run(data[: self.batch or len(data)])
            self._warm -= 1
        times: list[float] = []
        outputs = _timed_run(self.backend, data, self.batch, self.loop, times)
        check_finite(outputs, self.backend.output_names, path)
        t2 = time.perf_counter()
        for k, arr in enumerate(outputs):
            write_output(self.out_dir / output_name(path.name, k, self.outfmt), arr, self.outfmt)
        t3 = time.perf_counter()
        return FileResult(path.name, int(len(data)), [list(o.shape) for o in outputs], times,
                          t1 - t0, t2 - t1, t3 - t2)


class InferRecorder:
    """Collects per-file outcomes (in any order) into the summary and ``outputs.json``'s file records."""

    def __init__(self, summary: InferSummary, runner: FileRunner, files: list[Path]):
        self.summary, self.runner = summary, runner
        self._order = {p.name: i for i, p in enumerate(files)}
        self._records: dict[int, dict[str, Any]] = {}
        self.times: list[float] = []
        self.summary.stage_seconds = dict.fromkeys(STAGES, 0.0)

    def _items(self, name: str) -> dict[str, Any]:
        entry = self.runner._entries.get(name, {})
        return {"items": entry["items"]} if "items" in entry else {}

    def skipped(self, path: Path) -> None:
        """An input whose outputs were already complete."""
        self.summary.files_skipped += 1
        self._records[self._order[path.name]] = {"input": path.name, "skipped": True, **self._items(path.name)}

    def failed(self, name: str, reason: str) -> None:
        """An input that failed under ``on_error="skip"`` (``reason``: the error's one line)."""
        self.summary.files_failed += 1
        self.summary.failed.append(f"{name}\t{reason}")

    def done(self, r: FileResult) -> None:
        """An input run and written now."""
        s = self.summary
        s.files_done += 1
        s.images += r.count
        self.times.extend(r.times_ms)
        for stage, sec in zip(STAGES, (r.read_s, r.model_s, r.write_s), strict=True):
            s.stage_seconds[stage] += sec
        self._records[self._order[r.input]] = {"input": r.input, "count": r.count, "shapes": r.shapes,
                                               **self._items(r.input)}

    def write(self, model: str | Path, loop: int, wall_seconds: float) -> InferSummary:
        """Finish the statistics and write ``skipped.txt``, ``outputs.json`` and ``infer_summary.json``."""
        s, be, out_dir = self.summary, self.runner.backend, self.runner.out_dir
        finish_summary(s, self.times, loop)
        s.failed.sort(key=lambda line: self._order.get(line.split("\t", 1)[0], -1))
        s.stage_seconds = {k: round(v, 3) for k, v in s.stage_seconds.items()}
        s.wall_seconds = round(wall_seconds, 3)
        s.wall_images_per_s = s.images / wall_seconds if wall_seconds > 0 and s.images else None
        if s.failed:
            write_text(out_dir / SKIPPED, "".join(line + "\n" for line in s.failed))
        roles = output_roles(model)
        write_json(
            out_dir / OUTPUTS,
            {
                "format": "faceembed-outputs",
                "version": 1,
                "outfmt": self.runner.outfmt,
                "model": str(model),
                "outputs": [
                    {"index": k, "name": n, "dtype": "float32", "item_shape": list(sh) if sh else None,
                     "role": roles.get(n)}
                    for k, (n, sh) in enumerate(zip(be.output_names, item_shapes(be), strict=True))
                ],
                "files": [self._records[i] for i in sorted(self._records)],
            },
        )
        write_json(out_dir / SUMMARY, s.to_dict())
        return s


def check_infer_options(outfmt: str, loop: int, on_error: str) -> None:
    """Refuse bad ``--outfmt``, ``--loop`` and ``--on-error`` values before any work starts."""
    if on_error not in ("stop", "skip"):
        raise FaceembedError(f"--on-error must be 'stop' or 'skip', not {on_error!r}")
    if not 1 <= loop <= 100:
        raise FaceembedError(f"--loop must be between 1 and 100, not {loop}")
    if outfmt.upper() not in ("BIN", "TXT", "NPY"):
        raise FaceembedError(f"--outfmt must be BIN, TXT or NPY, not {outfmt!r}")


def prepare_output(inputs: str | Path, output_dir: str | Path, model: str | Path, be: Backend, o: InferOptions,
                   overwrite: bool = False) -> tuple[list[Path], dict | None, Path]:
    """List the input files, read their folder's manifest, claim ``output_dir`` for this run (a folder holding
    another model's or other inputs' outputs is refused, see :mod:`faceembed.fingerprint`) and sweep stale
    temps."""
    from faceembed.fingerprint import claim_folder, file_identity, inputs_digest

    files = list_input_files(inputs)
    manifest = read_manifest(files[0].parent)
    out_dir = Path(output_dir)
    made_by = {"command": "infer", "model": file_identity(model), "backend": be.name, "precision": be.precision,
               "outfmt": o.outfmt.upper(), "batch": o.batch, "inputs": inputs_digest(files)}
    claim_folder(out_dir, made_by, overwrite)
    remove_stale_temps(out_dir)
    return files, manifest, out_dir


def resolve_for_inputs(model: str | Path, backend: str | None, precision: str | None, threads: int | None,
                       inputs: str | Path) -> tuple[str, str | None]:
    """The (backend, precision) pair to run: the model's own kind's backend when none is named
    (:func:`~faceembed.inference.backends.default_backend`); ``auto`` measured on the rows of the first file of
    ``inputs`` (the files ``infer`` is about to run) instead of a pseudo-random batch."""
    from faceembed.inference.backends import default_backend

    if backend is None:
        return default_backend(model), precision
    if backend != "auto":
        return backend, precision
    from faceembed.inference.autoselect import resolve_backend

    if not Path(model).exists():
        raise MissingInputError("model file not found", Path(model))
    first_input = list_input_files(inputs)[0]
    manifest = read_manifest(first_input.parent)

    def first_rows(item_shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            return read_input_file(first_input, item_shape, manifest)[:32]
        except FaceembedError:  # a bad first file is reported when infer reaches it, not here
            return None

    return resolve_backend(model, "auto", precision, threads, sample=first_rows)


def open_backend(model: str | Path, backend: str | None, precision: str | None, threads: int | None, provider: str,
                 inputs: str | Path) -> Backend:
    """``load_backend`` on the pair :func:`resolve_for_inputs` gives (``auto`` measured on ``inputs``)."""
    name, prec = resolve_for_inputs(model, backend, precision, threads, inputs)
    return load_backend(model, name, prec, threads, provider)


@dataclass(frozen=True)
class InferOptions:
    """How ``infer`` runs, the same for the local and the Ray engine.

    ``outfmt`` BIN | TXT | NPY; ``batch`` runs each file in chunks of N items; ``loop`` runs each file K times
    (timing); ``backend`` ort | openvino | torch | auto (None: torch for ``.pt``, ort for ``.onnx``) and
    ``precision`` pick the runtime; ``on_error`` stop |
    skip (bad inputs go to ``skipped.txt``)."""

    outfmt: str = "BIN"
    batch: int | None = None
    loop: int = 1
    threads: int | None = None
    provider: str = "cpu"
    backend: str | None = None
    precision: str | None = None
    warmup: int = 2
    on_error: str = "stop"
    progress: bool = True
    overwrite: bool = False

    def check(self) -> None:
        """One clear error for a bad choice, before any work."""
        check_infer_options(self.outfmt, self.loop, self.on_error)


def infer_files(model: str | Path, inputs: str | Path, output_dir: str | Path, backend_obj: Backend | None = None,
                **options: Any) -> InferSummary:
    """Run ``model`` over every input tensor file and write its outputs into ``output_dir``.

    ``inputs`` is a folder (all its ``.bin``/``.npy``/``.txt`` files but labels, in lexicographic order) or a
    comma-separated list of files; ``options`` are :class:`InferOptions` fields. Returns the summary, also
    written to ``output_dir/infer_summary.json``.
    """
    from rich.progress import Progress

    t_start = time.perf_counter()
    from faceembed.models.registry import resolve_model

    model = resolve_model(model)  # a model name: its file (what the run record hashes)
    o = InferOptions(**options)
    o.check()
    be = backend_obj if backend_obj is not None else open_backend(model, o.backend, o.precision, o.threads,
                                                                  o.provider, inputs)
    files, manifest, out_dir = prepare_output(inputs, output_dir, model, be, o, o.overwrite)
    runner = FileRunner(be, out_dir, o.outfmt, o.batch, o.loop, o.warmup, manifest)
    rec = InferRecorder(InferSummary(str(model), be.name, be.precision), runner, files)
    with Progress(disable=not o.progress, transient=True) as bar:
        task = bar.add_task("infer", total=len(files))
        for path in files:
            bar.advance(task)
            if runner.complete(path):
                rec.skipped(path)
                continue
            try:
                rec.done(runner.run(path))
            except FaceembedError as exc:
                if o.on_error == "stop":
                    raise
                rec.failed(path.name, exc.one_line())
    return rec.write(model, o.loop, time.perf_counter() - t_start)
