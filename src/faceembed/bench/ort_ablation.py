"""``faceembed bench --ort-ablation``: the measured effect of each ONNX Runtime session choice.

Starting from faceembed's tuned session (``inference.backends.OrtBackend``), one setting at a time is changed
back (graph optimisation level, thread count, inter-op threads, spin-waiting, memory arena, IO binding) and
the same batch is timed, so docs/benchmarks.md can say what each choice is worth on this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.inference.timing import time_calls


class _Session:
    """A minimal backend over an ``InferenceSession`` built from explicit options (timing only)."""

    def __init__(self, path: Path, configure: Callable[[Any], None], io_binding: bool = False):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        configure(opts)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.io_binding = io_binding

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.io_binding:
            return self.session.run(self.output_names, {self.input_name: batch})
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _variants(threads: int) -> dict[str, tuple[Callable[[Any], None], bool]]:
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel

    def tuned(opts, **change) -> None:
        opts.graph_optimization_level = change.get("level", level.ORT_ENABLE_ALL)
        opts.intra_op_num_threads = change.get("threads", threads)
        opts.inter_op_num_threads = change.get("inter", 1)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = change.get("arena", True)
        if "spin" in change:
            opts.add_session_config_entry("session.intra_op.allow_spinning", change["spin"])

    return {
        "ORT default session (peer)": (lambda opts: None, False),
        "faceembed tuned": (tuned, False),
        "graph level basic": (lambda o: tuned(o, level=level.ORT_ENABLE_BASIC), False),
        "graph level extended": (lambda o: tuned(o, level=level.ORT_ENABLE_EXTENDED), False),
        "graph optimisations off": (lambda o: tuned(o, level=level.ORT_DISABLE_ALL), False),
        "1 intra-op thread": (lambda o: tuned(o, threads=1), False),
        "intra-op threads unset (ORT picks)": (lambda o: tuned(o, threads=0), False),
        "no spin-waiting": (lambda o: tuned(o, spin="0"), False),
        "memory arena off": (lambda o: tuned(o, arena=False), False),
        "IO binding": (tuned, True),
    }


def ort_ablation(model_path: str | Path, inputs: np.ndarray, threads: int, batches: list[int],
                 min_seconds: float = 1.0) -> list[dict[str, Any]]:
    """Median ms per batch of every session variant at each batch size, and its ratio to the tuned one."""
    rows: list[dict[str, Any]] = []
    for name, (configure, io_binding) in _variants(threads).items():
        session = _Session(Path(model_path), lambda o, c=configure: c(o), io_binding)
        for b in batches:
            x = np.ascontiguousarray(np.resize(inputs, (b, *inputs.shape[1:])), dtype=np.float32)
            rows.append({"variant": name, "batch": b,
                         "ms_per_batch_median": float(np.median(time_calls(session, x, min_seconds=min_seconds)))})
    tuned = {r["batch"]: r["ms_per_batch_median"] for r in rows if r["variant"] == "faceembed tuned"}
    for r in rows:
        r["time_vs_tuned"] = r["ms_per_batch_median"] / tuned[r["batch"]]
    return rows
