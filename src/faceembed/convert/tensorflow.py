"""``faceembed import MODEL.pb --inputs input_x:-1,28,28,1 --outputs output:0``: TensorFlow models to ONNX.

A frozen graph (``.pb`` GraphDef) or a SavedModel folder is converted with ``tf2onnx`` (inputs and outputs
named as the reference's ``atc --input_shape`` / ``--out_nodes`` took them: node names, ``:N`` for a node's
N-th output, ``-1`` for a dynamic axis), the ONNX tensors are renamed to the plain node names (``input_x``,
``output``), the model gets its card through :func:`faceembed.convert.onnx_model.import_onnx`, and the written
ONNX model is checked against TensorFlow itself on real inputs (MNIST test digits for 28x28x1 inputs, aligned
LFW faces for colour inputs, or what the caller passes). A difference above ``atol`` raises ParityError and
leaves nothing at the destination.

TensorFlow and tf2onnx are optional (``pip install -e '.[tensorflow]'``) and imported only when used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import BackendUnavailableError, FaceembedError, InputFormatError, MissingInputError, ParityError
from faceembed.files import atomic_path, write_bytes
from faceembed.models.card import ModelCard
from faceembed.models.card_io import card_to_onnx, load_onnx

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[tensorflow]'"
PARITY_COUNT = 64
DEFAULT_OPSET = 17  # what faceembed's own exports use


@dataclasses.dataclass
class TfGraph:
    """A frozen TensorFlow graph and the tensors to convert (``name:N``), with their clean ONNX names."""

    graph_def: Any
    inputs: list[str]
    outputs: list[str]
    renames: dict[str, str]


# ---- the optional backend --------------------------------------------------------------------------------

def _quiet_environment() -> None:
    """Keep TensorFlow's C++ and Python logs to errors (must run before tensorflow is first imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # no oneDNN banner; plain kernels
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def tensorflow_backend() -> tuple[Any, Any]:
    """``(tensorflow, tf2onnx)``, imported quietly; BackendUnavailableError with the install hint if absent."""
    _quiet_environment()
    try:
        import tensorflow as tf
        import tf2onnx
        import tf2onnx.convert
        import tf2onnx.tf_loader
    except ImportError as exc:
        raise BackendUnavailableError(f"importing TensorFlow models needs tensorflow and tf2onnx ({exc.name} is "
                                      f"not installed): {INSTALL_HINT}") from None
    tf.get_logger().setLevel(logging.ERROR)
    for name in ("tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if hasattr(tf2onnx, "logging"):
        tf2onnx.logging.set_level(logging.ERROR)
    return tf, tf2onnx


# ---- names -----------------------------------------------------------------------------------------------

def parse_tf_outputs(text: str) -> list[str]:
    """``"output:0"`` or ``"logits:0,embedding:0"`` (``;`` also separates) -> the list of names."""
    names = [n.strip() for n in str(text).replace(";", ",").split(",") if n.strip()]
    if not names:
        raise InputFormatError(f"--outputs {text!r} names no output (e.g. output:0)")
    return names


def _tensor_name(name: str) -> str:
    """``input_x`` -> ``input_x:0``; ``output:1`` stays."""
    node, sep, index = name.rpartition(":")
    return name if sep and node and index.isdigit() else f"{name}:0"


def _clean_name(tensor: str) -> str:
    """``input_x:0`` -> ``input_x``; ``split:1`` -> ``split_1`` (ONNX names without the output index)."""
    node, _, index = tensor.rpartition(":")
    return node if index == "0" else f"{node}_{index}"


# ---- loading the graph -----------------------------------------------------------------------------------

def _parse_graph_def(tf: Any, src: Path) -> Any:
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(src.read_bytes())
    except Exception as exc:  # google.protobuf DecodeError and friends
        raise InputFormatError(f"not a frozen TensorFlow graph (GraphDef .pb): {exc}", src) from None
    if not graph_def.node:
        raise InputFormatError("the TensorFlow graph has no nodes", src)
    return graph_def


def _check_nodes(graph_def: Any, tensors: list[str], what: str, src: Path) -> None:
    nodes = {n.name: n.op for n in graph_def.node}
    absent = [t for t in tensors if t.rpartition(":")[0] not in nodes]
    if absent:
        known = [n for n, op in nodes.items() if op == "Placeholder"] if what == "--inputs" else list(nodes)[-5:]
        kind = "placeholders" if what == "--inputs" else "last nodes"
        raise InputFormatError(f"{what}: no node {absent[0].rpartition(':')[0]!r} in the graph; its {kind}: "
                               f"{', '.join(known) or 'none'}", src)


def frozen_graph(tf: Any, src: Path, inputs: Sequence[str], outputs: Sequence[str]) -> TfGraph:
    """A frozen GraphDef file, with ``inputs`` / ``outputs`` as node names (``:N`` optional)."""
    if not outputs:
        raise InputFormatError("--outputs is required for a frozen graph (e.g. --outputs output:0)", src)
    graph_def = _parse_graph_def(tf, src)
    ins, outs = [_tensor_name(n) for n in inputs], [_tensor_name(n) for n in outputs]
    _check_nodes(graph_def, ins, "--inputs", src)
    _check_nodes(graph_def, outs, "--outputs", src)
    return TfGraph(graph_def, ins, outs, {t: _clean_name(t) for t in (*ins, *outs)})


def _resolve(wanted: Sequence[str], tensors: list[str], renames: dict[str, str], what: str, src: Path) -> list[str]:
    """Map signature names (``input_x``) or graph tensor names (``input_x:0``) to the graph's tensors."""
    by_name = {renames.get(t, _clean_name(t)): t for t in tensors}
    found = []
    for name in wanted:
        tensor = by_name.get(name) or next((t for t in tensors if t in (name, _tensor_name(name))), None)
        if tensor is None:
            raise InputFormatError(f"{what}: the SavedModel signature has no {name!r}; it has "
                                   f"{', '.join(by_name)}", src)
        found.append(tensor)
    return found


def saved_model_graph(tf2onnx: Any, src: Path, inputs: Sequence[str], outputs: Sequence[str]) -> TfGraph:
    """The ``serve`` tag's first signature of a SavedModel folder, frozen by tf2onnx; ONNX names are the
    signature's names. ``outputs`` empty: every output of the signature."""
    try:
        graph_def, ins, outs, renames = tf2onnx.tf_loader.from_saved_model(
            str(src), None, None, tag="serve", return_tensors_to_rename=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputFormatError(f"cannot load the SavedModel ({first})", src) from None
    ins = _resolve(inputs, ins, renames, "--inputs", src) if inputs else ins
    outs = _resolve(outputs, outs, renames, "--outputs", src) if outputs else outs
    return TfGraph(graph_def, ins, outs, {t: renames.get(t, _clean_name(t)) for t in (*ins, *outs)})


def load_graph(tf: Any, tf2onnx: Any, src: Path, inputs: Sequence[str], outputs: Sequence[str]) -> TfGraph:
    """A frozen graph ``.pb`` file or a SavedModel folder (one holding ``saved_model.pb``)."""
    if src.is_dir():
        if not (src / "saved_model.pb").is_file():
            raise InputFormatError("folder is not a SavedModel (no saved_model.pb)", src)
        return saved_model_graph(tf2onnx, src, inputs, outputs)
    if not src.is_file():
        raise MissingInputError("TensorFlow model not found", src)
    return frozen_graph(tf, src, inputs, outputs)


# ---- conversion ------------------------------------------------------------------------------------------

def to_onnx(tf2onnx: Any, graph: TfGraph, shapes: dict[str, list[int]], opset: int) -> Any:
    """tf2onnx's ONNX ModelProto of ``graph`` (``shapes``: tensor -> dims, -1 dynamic), tensors renamed."""
    override = {t: [None if d < 0 else d for d in dims] for t, dims in shapes.items()}
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph.graph_def, input_names=graph.inputs, output_names=graph.outputs, opset=opset,
            shape_override=override or None, tensors_to_rename=graph.renames)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputFormatError(f"tf2onnx cannot convert the graph ({type(exc).__name__}: {first})") from None
    return model


def _card_defaults(flags: dict[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """One-channel inputs can only be GRAY and have no face alignment: default those two flags."""
    flags = dict(flags)
    if len(shape) == 4 and 1 in (shape[1], shape[3]) and 3 not in (shape[1], shape[3]):
        flags.setdefault("color", "GRAY")
        if flags["color"] == "GRAY":
            flags.setdefault("template", "none")
    return flags


# ---- parity with TensorFlow ------------------------------------------------------------------------------

def tf_runner(tf: Any, graph: TfGraph) -> Any:
    """A callable ``x -> {ONNX output name: numpy array}`` running the frozen graph in TensorFlow (eager, CPU)."""
    def _import() -> None:
        tf.compat.v1.import_graph_def(graph.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    fn = wrapped.prune([wrapped.graph.get_tensor_by_name(t) for t in graph.inputs],
                       [wrapped.graph.get_tensor_by_name(t) for t in graph.outputs])

    names = [graph.renames[t] for t in graph.outputs]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with tf.device("/cpu:0"):
            return {n: np.asarray(o) for n, o in zip(names, fn(tf.constant(x)), strict=True)}

    return run


def _real_crops(card: ModelCard, n: int) -> np.ndarray:
    """``n`` uint8 crops of the card's size: MNIST test digits (28x28 gray), else aligned LFW faces."""
    if card.color == "GRAY" and (card.height, card.width) == (28, 28):
        from faceembed.data.mnist import default_mnist_root, load_mnist

        return load_mnist(default_mnist_root(), "test")[0][:n]
    from faceembed.export.parity_inputs import lfw_root

    root = lfw_root()
    if card.color == "GRAY" or root is None:
        raise FaceembedError(f"no real {card.height}x{card.width} {card.color} inputs for the parity check: pass "
                             "parity_inputs (uint8 crops or the model's float32 input tensors)")
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.align_files import align_images_in_memory

    landmarks = read_landmarks(root / "lfw_landmark.txt")
    names = sorted(landmarks)[:n]
    return align_images_in_memory(root / "images", landmarks, names, size=(card.height, card.width), workers=1)


def parity_batch(card: ModelCard, given: np.ndarray | None = None, n: int = PARITY_COUNT) -> np.ndarray:
    """The float32 model input for the parity check: ``given`` uint8 crops go through the card's
    preprocessing, ``given`` float arrays are used as they are; None: real crops (see :func:`_real_crops`)."""
    from faceembed.data.preprocess import preprocess

    if given is None:
        return preprocess(_real_crops(card, n), card)
    given = np.asarray(given)
    return preprocess(given, card) if given.dtype == np.uint8 else np.ascontiguousarray(given, dtype=np.float32)


def _ort_runner(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name, outputs = sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()]
    return lambda x: dict(zip(outputs, sess.run(outputs, {name: x}), strict=True))


def check_parity(tf_run: Any, onnx_path: Path, card: ModelCard, x: np.ndarray, atol: float) -> float:
    """Max abs difference of every output between TensorFlow and the ONNX file; ParityError above ``atol``.

    A fixed-batch model is fed in chunks of its batch (a remainder is dropped)."""
    ort_run = _ort_runner(onnx_path)
    step = card.batch or len(x)
    if len(x) < step:
        raise FaceembedError(f"parity check needs at least {step} inputs (the model's fixed batch), got {len(x)}")
    worst = 0.0
    for start in range(0, len(x) - step + 1, step):
        chunk = x[start:start + step]
        wanted, got_all = tf_run(chunk), ort_run(chunk)
        for name, want in wanted.items():
            got = got_all[name]
            if want.shape != got.shape:
                raise ParityError(f"output {name!r}: ONNX shape {list(got.shape)} != TensorFlow {list(want.shape)}")
            worst = max(worst, float(np.max(np.abs(want.astype(np.float64) - got), initial=0.0)))
    if not np.isfinite(worst) or worst > atol:
        raise ParityError(f"ONNX model disagrees with TensorFlow on {len(x)} real inputs: max abs diff "
                          f"{worst:.3g} > {atol:g}")
    return worst


# ---- the import ------------------------------------------------------------------------------------------

def _set_source(path: Path, card: ModelCard, source: str) -> ModelCard:
    """Record the TensorFlow file (not the temporary ONNX file) as the card's source."""
    card = card.replace(source=source)
    model = load_onnx(path)
    card_to_onnx(model, card)
    write_bytes(path, model.SerializeToString())
    return card


def import_tensorflow(src: str | Path, dst: str | Path, *, inputs: Sequence[tuple[str, Sequence[int]]],
                      outputs: Sequence[str], parity_inputs: np.ndarray | None = None, atol: float = 1e-5,
                      opset: int = DEFAULT_OPSET, **card_flags: Any) -> ModelCard:
    """Convert the TensorFlow frozen graph or SavedModel ``src`` to the ONNX model ``dst`` with a model card.

    ``inputs``: ``[(name, dims)]`` of the one image input (``-1``: dynamic axis), e.g.
    ``[("input_x", [-1, 28, 28, 1])]``; ``outputs``: node names, e.g. ``["output:0"]`` (a SavedModel may take
    its signature's names, or none for all). ``card_flags`` go to ``import_onnx`` (color, mean, std, template,
    size, layout, embedding, outputs roles as ``roles``, arch, name); one-channel inputs default to
    ``color="GRAY"``, ``template="none"``. The ONNX file must match TensorFlow within ``atol`` (max abs diff)
    on real inputs, else ParityError and ``dst`` is not written. Returns the card.
    """
    from faceembed.convert.onnx_model import import_onnx

    src, dst = Path(src), Path(dst)
    if len(inputs) != 1:
        raise InputFormatError(f"--inputs names {len(inputs)} inputs; faceembed imports models with one image input")
    tf, tf2onnx = tensorflow_backend()
    (in_name, in_dims), = inputs
    graph = load_graph(tf, tf2onnx, src, [in_name], list(outputs))
    model = to_onnx(tf2onnx, graph, {graph.inputs[0]: list(in_dims)}, opset)
    flags = _card_defaults(card_flags, list(in_dims))
    if "roles" in flags:
        flags["outputs"] = flags.pop("roles")
    flags.setdefault("name", src.stem)
    onnx_input = graph.renames[graph.inputs[0]]
    with tempfile.TemporaryDirectory(prefix="faceembed-tf-") as tmp, atomic_path(dst) as out:
        raw = Path(tmp) / f"{src.stem}.onnx"
        raw.write_bytes(model.SerializeToString())
        card = import_onnx(raw, out, inputs=[(onnx_input, list(in_dims))], **flags)
        card = _set_source(out, card, src.name)
        worst = check_parity(tf_runner(tf, graph), out, card, parity_batch(card, parity_inputs), atol)
    log.info("%s -> %s: max abs diff to TensorFlow %.3g", src.name, dst, worst)
    return card
