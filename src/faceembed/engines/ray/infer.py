"""``faceembed infer --engine ray``: the local engine's :class:`FileRunner` on Ray Data workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.batch.infer import FileRunner, InferOptions, InferRecorder, prepare_output, resolve_for_inputs
from faceembed.batch.infer_report import FileResult, InferSummary
from faceembed.engines.ray.session import (
    Stopwatch,
    error_record,
    local_cpus,
    plan_workers,
    raise_record,
    ray_session,
    records_column,
    run_pipeline,
)
from faceembed.errors import FaceembedError
from faceembed.inference.backends import load_backend


class InferWorker:
    """One Ray Data worker: loads the model once, then runs the files of each batch it is given."""

    def __init__(self, model: str, backend: str, precision: str | None, threads: int, provider: str,
                 out_dir: str, outfmt: str, batch: int | None, loop: int, warmup: int,
                 manifest: dict[str, Any] | None):
        be = load_backend(model, backend, precision, threads, provider)
        self.runner = FileRunner(be, out_dir, outfmt, batch, loop, warmup, manifest)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for path, entry in zip(rows["path"], rows["entry"], strict=True):
            entry = _decode_entry(entry)
            try:
                records.append(vars(self.runner.run(Path(str(path)), entry)))
            except FaceembedError as exc:
                records.append({"input": Path(str(path)).name, **error_record(exc)})
        return records_column(records)


def _decode_entry(text: Any) -> dict[str, Any] | None:
    return json.loads(str(text)) if text else None


def infer_files_ray(model: str | Path, inputs: str | Path, output_dir: str | Path, address: str | None = None,
                    num_workers: int | None = None, **options: Any) -> Any:
    """:func:`~faceembed.batch.infer.infer_files` on Ray Data: same outputs, reports and resume; ``options`` are
    :class:`~faceembed.batch.infer.InferOptions` fields.

    Without ``address`` a local Ray instance is started on this machine (all its CPUs) unless one is already
    running; with one (``auto``, ``ray://host:10001``) the cluster is joined. ``num_workers`` workers (default:
    one per CPU, or per ``threads`` CPUs) each reserve their share of the CPUs and run the model with that many
    intra-op threads. Returns the :class:`InferSummary` (``engine="ray"``), also written to the output folder.
    """
    from rich.progress import Progress

    clock = Stopwatch()
    from faceembed.models.registry import resolve_model

    model = resolve_model(model)  # a model name: its file (what the run record hashes)
    o = InferOptions(**options)
    o.check()
    # auto is resolved once, here, and the pair goes to every worker (a worker never measures on its own)
    backend, precision = resolve_for_inputs(model, o.backend, o.precision, o.threads, inputs)
    driver_be = load_backend(model, backend, precision, 1, o.provider)  # validates all before Ray starts
    files, manifest, out_dir = prepare_output(inputs, output_dir, model, driver_be, o, o.overwrite)
    runner = FileRunner(driver_be, out_dir, o.outfmt, o.batch, o.loop, o.warmup, manifest)
    summary = InferSummary(str(model), driver_be.name, driver_be.precision, engine="ray")
    rec = InferRecorder(summary, runner, files)
    todo = []
    for path in files:
        if runner.complete(path):
            rec.skipped(path)
        else:
            todo.append(path)
    header = {**manifest, "files": []} if manifest else None  # entries travel with their files
    rows = [{"path": str(p.resolve()),
             "entry": json.dumps({k: v for k, v in runner.entry(p).items() if k != "items"}) if manifest else ""}
            for p in todo]
    with ray_session(address, local_cpus() if address is None else None) as ray:
        total = ray.cluster_resources().get("CPU", local_cpus())
        workers, cpus, worker_threads = plan_workers(total, num_workers, o.threads)
        summary.workers = workers
        kwargs = {"model": str(Path(model).resolve()), "backend": backend, "precision": precision,
                  "threads": worker_threads, "provider": o.provider, "out_dir": str(out_dir.resolve()),
                  "outfmt": o.outfmt, "batch": o.batch, "loop": o.loop, "warmup": o.warmup, "manifest": header}
        with Progress(disable=not o.progress, transient=True) as bar:
            task = bar.add_task(f"infer (ray, {workers} workers)", total=len(todo))
            for record in run_pipeline(ray, rows, InferWorker, kwargs, workers, cpus, batch_size=4):
                bar.advance(task)
                if "error" in record:
                    if o.on_error == "stop":
                        raise_record(record)
                    rec.failed(record["input"], record["error"])
                else:
                    rec.done(FileResult(**record))
    return rec.write(model, o.loop, clock.seconds())
