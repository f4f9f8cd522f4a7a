"""Micro-batching: the aligned face crops of concurrent requests go through the face model together.

:class:`BatchingModel` wraps a loaded :class:`faceembed.faces.embed.FaceModel` and offers the same ``embed(crops)``
call, so a :class:`faceembed.faces.analyzer.FaceAnalyzer` uses it unchanged (``analyzer.model = BatchingModel(...)``).
Each caller's crops are queued; one worker thread takes what arrived within a short window (or until the batch is
full), runs the model once on all of them, and hands each caller its own rows back. Detection stays in the callers'
threads (the server's threadpool), each with its own detector (:class:`ThreadSafeAnalyzer`); only the model runs in
the worker.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from faceembed.faces.analyzer import FaceAnalyzer
from faceembed.faces.embed import FaceModel


@dataclass
class _Job:
    crops: np.ndarray
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker did: model ``calls``, ``crops`` embedded and ``requests`` served (requests / calls is the
    mean number of callers a model call served)."""

    calls: int = 0
    crops: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return {"calls": self.calls, "crops": self.crops, "requests": self.requests,
                "requests_per_call": round(self.requests / self.calls, 3) if self.calls else None}


class BatchingModel(FaceModel):
    """A FaceModel whose ``embed`` batches concurrent callers into one call of the wrapped ``model``.

    ``window_ms``: how long the worker waits for more callers after the first one arrives; ``max_batch``: a batch
    this full (in crops) runs at once. ``path``, ``backend`` and ``card`` are the wrapped model's, so analyzers and
    collections see the same model (and its digest).
    """

    def __init__(self, model: FaceModel, window_ms: float = 5.0, max_batch: int = 32):
        super().__init__(model.path, model.backend, model.card)
        self.config = dict(getattr(model, "config", {}) or {})
        self._model = model
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_batch = max(1, int(max_batch))
        self.stats = BatchStats()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="faceembed-model", daemon=True)
        self._worker.start()

    def embed(self, faces: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Aligned uint8 RGB faces ``[N, H, W, 3]`` -> ``(embeddings [N, D], sigma_sq [N, D] or None)``, run in the
        worker thread together with the crops of whoever else called within the window."""
        if len(faces) == 0:
            return self._model.embed(faces, batch)
        if not self._worker.is_alive():
            raise RuntimeError("the model worker has stopped")
        job = _Job(np.asarray(faces))
        self._jobs.put(job)
        return job.future.result()

    def close(self) -> None:
        """Stop the worker after the queued jobs."""
        self._jobs.put(None)
        self._worker.join(timeout=10)

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` and the jobs that arrive within the window, up to ``max_batch`` crops; True when asked to
        stop."""
        jobs, size = [first], len(first.crops)
        deadline = time.perf_counter() + self.window_s
        while size < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self._jobs.get(timeout=left) if left > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.crops)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            self._embed_jobs(jobs)

    def _embed_jobs(self, jobs: list[_Job]) -> None:
        """One model call for every job; each job's future gets its own rows (or the model's exception)."""
        try:
            emb, sig = self._model.embed(np.concatenate([j.crops for j in jobs]), max(64, self.max_batch))
        except BaseException as exc:  # handed to every caller, whose request then fails alone
            for j in jobs:
                j.future.set_exception(exc)
            return
        self.stats.calls += 1
        self.stats.crops += len(emb)
        self.stats.requests += len(jobs)
        start = 0
        for j in jobs:
            end = start + len(j.crops)
            j.future.set_result((emb[start:end], None if sig is None else sig[start:end]))
            start = end


class DetectorPool:
    """``size`` MTCNN detectors made up front; each ``detect_many`` borrows one (a detector's runtime requests are
    not safe to share between threads), so that many request threads detect at once, at most ``size`` together."""

    def __init__(self, make, size: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(max(1, size)):
            self._free.put(make())

    def detect_many(self, images):
        detector = self._free.get()
        try:
            return detector.detect_many(images)
        finally:
            self._free.put(detector)

    def detect(self, image):
        return self.detect_many([image])[0]


class ThreadSafeAnalyzer(FaceAnalyzer):
    """A FaceAnalyzer for many request threads at once: detection borrows one of ``detectors`` MTCNN detectors
    (default: one per CPU, at least 2), while every thread's crops go to the one (batched) model.

    The detectors run on ONNX Runtime: two OpenVINO detectors inferring in two threads at once were seen to hang
    (both threads stuck in OpenVINO's input dispatch), which a server must never do."""

    def __init__(self, model: FaceModel, detector: str = "mtcnn", detectors: int | None = None,
                 detector_backend: str = "ort", **kwargs):
        import os

        from faceembed.faces.detect import MTCNNDetector

        super().__init__(model, detector, detector_backend=detector_backend, **kwargs)
        config = self.detector_config
        self._pool = DetectorPool(lambda: MTCNNDetector(config=config, backend=self.detector_backend),
                                  detectors or max(2, os.cpu_count() or 1))

    def _detector(self):
        return self._pool
