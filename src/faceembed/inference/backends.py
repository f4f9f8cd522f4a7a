"""Inference backends behind one small interface: load a model file, run a batch, get named outputs.

* ``ort``: ONNX Runtime on an ``.onnx`` file (CPU, CUDA or TensorRT execution provider). The file's
  precision (fp32 / fp16 / int8) is what the file holds; ``faceembed export`` records it in the metadata.
* ``openvino``: OpenVINO on an ``.onnx`` file; the inference precision hint is always set explicitly
  (OpenVINO silently computes in bf16 on CPUs with AVX-512 BF16 unless told otherwise).
* ``torch``: PyTorch eager on a faceembed checkpoint; ``bf16`` runs under CPU autocast.

Every backend takes NHWC float32 batches (the files' layout) and returns float32/int64 numpy arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from faceembed.errors import BackendUnavailableError, InputFormatError, MissingInputError, ShapeMismatchError

BACKENDS = ("ort", "openvino", "torch")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class Backend(Protocol):
    """What every backend offers."""

    name: str
    precision: str
    input_name: str
    output_names: list[str]
    item_shape: tuple[int, ...]  # per-item input shape, NHWC without the batch axis

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run one batch ``[N, *item_shape]`` float32 and return the outputs in ``output_names`` order."""
        ...


@dataclass
class ModelInfo:
    """Static facts about a model file, read without running it."""

    input_name: str
    item_shape: tuple[int, ...]
    output_names: list[str]
    output_item_shapes: list[tuple[int, ...] | None] = field(default_factory=list)
    precision: str = "fp32"
    fixed_batch: int | None = None  # the graph takes exactly this many items per call (None: any number)


def check_batch(
    batch: np.ndarray, item_shape: tuple[int, ...], source: str | Path | None = None
) -> np.ndarray:
    """Validate a batch against the model's per-item shape before running it (both shapes in the message)."""
    if batch.dtype != np.float32:
        raise ShapeMismatchError(f"input dtype {batch.dtype} but the model takes float32", source)
    if tuple(batch.shape[1:]) != tuple(item_shape):
        raise ShapeMismatchError(
            f"input items have shape {list(batch.shape[1:])} but the model takes {list(item_shape)} "
            f"(batch shape {list(batch.shape)})",
            source,
        )
    return np.ascontiguousarray(batch)


def onnx_info(path: str | Path) -> ModelInfo:
    """Read input/output names and shapes and faceembed's precision tag from an ONNX file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("model file not found", path)
    if path.stat().st_size == 0:
        raise InputFormatError("empty ONNX model file, expected a serialized ONNX ModelProto", path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        with open(path, "rb") as f:
            head = f.read(8)
        why = ("it starts like one (ir_version), so it is probably truncated" if head[:1] == b"\x08"
               else f"it does not start like one ({head!r}); expected an ONNX protobuf")
        raise InputFormatError(f"not a valid ONNX model ({type(exc).__name__}): {why}", path) from None
    if not model.graph.node and not model.graph.output:
        raise InputFormatError("not a valid ONNX model (no graph: truncated or not an ONNX protobuf)", path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputFormatError(f"expected one input, the model has {len(inputs)}", path)

    def dims(value_info) -> tuple[int | None, ...]:
        return tuple(
            d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim
        )

    in_dims = dims(inputs[0])
    if len(in_dims) < 2 or any(d is None for d in in_dims[1:]):
        raise InputFormatError(f"input {inputs[0].name!r} needs static item dims, got {list(in_dims)}", path)
    out_shapes = []
    for o in model.graph.output:
        d = dims(o)[1:]
        out_shapes.append(tuple(d) if d and all(x is not None for x in d) else None)
    meta = {p.key: p.value for p in model.metadata_props}
    return ModelInfo(
        inputs[0].name,
        tuple(in_dims[1:]),
        [o.name for o in model.graph.output],
        out_shapes,
        meta.get("faceembed.precision", _guess_precision(model)),
        in_dims[0] if in_dims[0] else None,
    )


def run_in_fixed_batches(run, batch: np.ndarray, fixed: int | None) -> list[np.ndarray]:
    """``run(batch)`` for a graph that takes exactly ``fixed`` items per call: ``batch`` is cut into chunks of
    ``fixed``, the last one padded with zeros, and the outputs' rows of the padding dropped."""
    if not fixed or len(batch) == fixed:
        return run(batch)
    parts = []
    for start in range(0, len(batch), fixed):
        chunk = batch[start:start + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        parts.append([np.asarray(o)[:n] for o in run(np.ascontiguousarray(chunk))])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _runtime_error(exc: Exception, runtime: str) -> ShapeMismatchError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ShapeMismatchError(f"{runtime} could not run the model on this input ({first})")


def _guess_precision(model) -> str:
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}:
        return "int8"
    if any(i.data_type == 10 for i in model.graph.initializer):  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


class OrtBackend:
    """ONNX Runtime session tuned for throughput on CPU (all graph optimisations, fixed thread count)."""

    name = "ort"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        provider: str = "cpu",
        precision: str | None = None,
    ):
        import onnxruntime as ort

        info = onnx_info(path)
        if precision is not None and precision != info.precision:
            raise BackendUnavailableError(
                f"the file holds a {info.precision} model; ONNX Runtime runs a file at its own precision "
                f"(export with --fp16 or run 'faceembed quantize' for {precision})",
                path,
            )
        if provider not in PROVIDERS:
            raise BackendUnavailableError(
                f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}"
            )
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise BackendUnavailableError(
                f"execution provider {PROVIDERS[provider]} is not available here (available: {', '.join(available)})"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: fp16 graphs log harmless constant-folding notes
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise InputFormatError(f"ONNX Runtime cannot load the model ({first})", path) from None
        self.input_name, self.item_shape, self.output_names = (
            info.input_name,
            info.item_shape,
            info.output_names,
        )
        self.output_item_shapes = info.output_item_shapes
        self.precision = info.precision
        self.provider = provider
        self.fixed_batch = info.fixed_batch

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, {self.input_name: batch})
        except Exception as exc:  # onnxruntime's own exception types: one typed line instead
            raise _runtime_error(exc, "ONNX Runtime") from None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return run_in_fixed_batches(self._run, check_batch(batch, self.item_shape), self.fixed_batch)


class OpenVinoBackend:
    """OpenVINO on CPU with the inference precision set explicitly (f32, bf16 or f16)."""

    name = "openvino"
    # int8 files: the quantized ops run in int8 (VNNI), the rest with the bf16 hint (f32 where bf16 is absent)
    _HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "bf16"}

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailableError(
                "OpenVINO is not installed: pip install 'faceembed[openvino]'"
            ) from None
        info = onnx_info(path)
        if precision == "int8" and info.precision != "int8":
            raise BackendUnavailableError("int8 needs a quantized model file ('faceembed quantize')", path)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": self._HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_name, self.item_shape, self.output_names = (
            info.input_name,
            info.item_shape,
            info.output_names,
        )
        self.output_item_shapes = info.output_item_shapes
        self.precision = precision
        self.fixed_batch = info.fixed_batch

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        # Shared tensors: OpenVINO reads the input array in place and returns views of its own output buffers,
        # copied once here (the next call overwrites them). Measured at batch 1 on 2 cores: 1.10-1.35x over
        # infer()'s default copies (scripts/batch1_latency.py, docs/benchmarks.md).
        try:
            result = self.request.infer({self.input_name: batch}, share_inputs=True, share_outputs=True)
        except Exception as exc:  # OpenVINO's RuntimeError: one typed line instead
            raise _runtime_error(exc, "OpenVINO") from None
        return [np.array(result[self.compiled.output(name)]) for name in self.output_names]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return run_in_fixed_batches(self._run, check_batch(batch, self.item_shape), self.fixed_batch)


class TorchBackend:
    """PyTorch eager on a faceembed checkpoint; bf16 through CPU autocast."""

    name = "torch"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        import torch

        from faceembed.models.checkpoint import load_checkpoint

        if precision not in ("fp32", "bf16"):
            raise BackendUnavailableError(f"the torch backend runs fp32 or bf16, not {precision}")
        if threads:
            torch.set_num_threads(int(threads))
        self.model, spec, _ = load_checkpoint(path)
        self.input_name, self.output_names = spec.input_name, list(spec.output_names)
        self.item_shape = spec.nhwc
        self.output_item_shapes = [None] * len(self.output_names)
        self.precision = precision
        self._torch = torch

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        batch = check_batch(batch, self.item_shape)
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            outputs = self.model(x)
        return [o.float().numpy() if o.is_floating_point() else o.numpy() for o in outputs]


def run_batched(backend: Backend, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """Run ``x`` through ``backend`` in chunks of ``batch`` rows; the outputs concatenated per output."""
    parts = [backend.run(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def default_backend(path: str | Path) -> str:
    """The backend a model file runs on when none is named: ``torch`` for a faceembed checkpoint (``.pt``),
    ``ort`` (ONNX Runtime) for an ONNX file."""
    return "ort" if Path(path).suffix.lower() == ".onnx" else "torch"


def load_backend(
    path: str | Path,
    backend: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    provider: str = "cpu",
) -> Backend:
    """Open ``path`` with the named backend (None: :func:`default_backend`). ``.pt`` checkpoints run on ``torch``;
    ONNX files on the others.

    ``auto`` is not a backend here: the driver resolves it once into a (backend, precision) pair with
    :func:`faceembed.inference.autoselect.resolve_backend` and passes that pair to every worker."""
    from faceembed.models.registry import resolve_model

    path = resolve_model(path)  # a built-in or imported model's name works wherever a path does
    if not path.exists():
        raise MissingInputError("model file not found", path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailableError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if backend == "torch":
        if path.suffix == ".onnx":
            raise BackendUnavailableError(
                "the torch backend runs faceembed checkpoints (.pt), not ONNX files", path
            )
        return TorchBackend(path, threads, precision or "fp32")
    if path.suffix != ".onnx":
        raise BackendUnavailableError(
            f"the {backend} backend runs .onnx files; export the checkpoint first", path
        )
    if backend == "openvino":
        return OpenVinoBackend(path, threads, precision or "fp32")
    return OrtBackend(path, threads, provider, precision)
