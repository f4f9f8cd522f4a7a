"""The Ray engine: ``infer`` and ``align`` on Ray Data, on this machine or a cluster, with the local engine's
outputs, byte for byte.

The driver lists the inputs, skips those already complete (resume), and streams the rest through
``map_batches`` with a callable class: each worker loads the model once (:func:`load_backend`) and runs every
file through the same :class:`~faceembed.batch.infer.FileRunner` (align: :func:`~faceembed.faces.align_files.align_one`)
as the local engine, writing its outputs itself with the same names and atomic writes. Workers send back only
small per-file records; the driver counts them, raises the first failure (``on_error="stop"``) or lists it in
``skipped.txt``, and writes the same reports. On a cluster the input and output folders must be on storage
every node sees at the same path (NFS, a shared mount).

Ray is optional (``pip install 'faceembed[ray]'``) and imported only here, only when the engine is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from faceembed import errors
from faceembed.errors import BackendUnavailableError, FaceembedError

RAY_MISSING = "the Ray engine needs Ray, which is not installed: pip install 'faceembed[ray]'"


def import_ray() -> Any:
    """Import ``ray`` and ``ray.data`` lazily; one-line :class:`BackendUnavailableError` when missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(RAY_MISSING) from None
    return ray


def local_cpus() -> int:
    """CPUs this process may use (the local Ray instance gets all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_workers(total_cpus: float, num_workers: int | None, threads: int | None) -> tuple[int, float, int]:
    """``(workers, CPUs reserved per worker, intra-op threads per worker)``.

    Default: one worker per ``threads`` CPUs (one per CPU). Workers share the CPUs evenly, so asking for more
    workers than CPUs still schedules them all (fractional reservations) instead of waiting forever.
    """
    total = max(1.0, float(total_cpus))
    workers = num_workers or max(1, int(total // (threads or 1)))
    cpus = min(float(threads or max(1, int(total // workers))), total / workers)
    return workers, cpus, threads or max(1, int(cpus))


def plan_blocks(n_items: int, workers: int, per_block: int = 16) -> int:
    """Ray Data blocks for ``n_items``: at least 4 per worker (load balance), about ``per_block`` items each."""
    return max(1, min(n_items, max(4 * workers, -(-n_items // per_block))))


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the running Ray session, join ``address`` (``auto``, ``ray://host:10001``) or start a local one.

    A session started or joined here is shut down on exit; one that was already running is left alone.
    Logs are kept quiet: errors only, no dashboard, no worker output forwarded, no Ray Data progress bars.
    """
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ core logs notes at error level
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                  "include_dashboard": False, "configure_logging": True}
        if address is None:
            kwargs.update(num_cpus=num_cpus or local_cpus(), object_store_memory=512 * 1024**2)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendUnavailableError(f"cannot start or join Ray at {address or 'this machine'}: "
                                          f"{str(exc).splitlines()[0][:200]}") from None
        started = True
    quiet_ray_data()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def quiet_ray_data() -> None:
    """No Ray Data progress bars or execution banners (faceembed shows its own progress)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    for attr in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_pipeline(
    ray: Any,
    rows: list[dict[str, Any]],
    worker_cls: type,
    constructor_kwargs: dict[str, Any],
    workers: int,
    cpus_per_worker: float,
    batch_size: int,
) -> Iterator[dict[str, Any]]:
    """Stream ``rows`` through ``worker_cls`` (a callable class, ``workers`` actors) and yield its records.

    Each record comes back as a JSON string in the ``record`` column and is yielded decoded, as soon as its
    batch is done.
    """
    if not rows:
        return
    ds = ray.data.from_items(rows, override_num_blocks=plan_blocks(len(rows), workers, 4 * batch_size))
    ds = ds.map_batches(
        worker_cls,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        fn_constructor_kwargs=constructor_kwargs,
        batch_format="numpy",
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for text in batch["record"]:
            yield json.loads(str(text))


def error_record(exc: FaceembedError) -> dict[str, str]:
    """A worker's failure as data: the error class name and its one line."""
    return {"error": exc.one_line(), "kind": type(exc).__name__}


def raise_record(record: dict[str, Any]) -> None:
    """Raise the typed error a worker recorded (same class, same one line)."""
    raise getattr(errors, record.get("kind", ""), FaceembedError)(record["error"])


def records_column(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Worker records as Ray Data's output batch (one JSON string per input row)."""
    return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


class Stopwatch:
    """Wall time since creation (the whole command: Ray start-up, model loading, the pipeline)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0
