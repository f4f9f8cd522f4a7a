"""Reading an ONNX graph for :func:`faceembed.convert.onnx_model.import_onnx`: the image input, its layout and
size, the colour order, normalisation and output roles, each checked against the caller's flags. Every
problem is one InputFormatError naming the flag that fixes it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faceembed.data.templates import TEMPLATE_NAMES
from faceembed.errors import InputFormatError
from faceembed.models.card import COLORS, LAYOUTS, OutputSpec

MEAN_STD_HINT = ("x = (pixel - mean) / std per channel, in the model's colour order; insightface models use "
                 "--mean 127.5 --std 127.5, models that normalise inside the graph --mean 0 --std 1")

def flag_error(flag: str, message: str) -> InputFormatError:
    """``MESSAGE: pass FLAG`` as one InputFormatError."""
    return InputFormatError(f"{message}: pass {flag}")


def dims_of(value_info: Any) -> list[int | None] | None:
    """A graph value's shape (None for symbolic axes), or None when it has no shape."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


def image_input(model: Any, inputs: Sequence[tuple[str, list[int]]] | None) -> tuple[Any, list[int | None]]:
    """The graph's one real input and its 4-D shape (``--inputs`` fills in what the graph leaves open)."""
    init = {t.name for t in model.graph.initializer}
    real = [v for v in model.graph.input if v.name not in init]
    names = [v.name for v in real]
    if len(real) != 1:
        raise InputFormatError(f"the model has {len(real)} inputs ({', '.join(names)}); faceembed runs "
                               "models with one image input")
    value, dims = real[0], dims_of(real[0])
    for name, shape in inputs or ():
        if name != value.name:
            raise flag_error("--inputs with the input's name", f"--inputs names {name!r}, the model's input is "
                        f"{value.name!r}")
        given = [None if d == -1 else d for d in shape]
        if dims is not None and (len(dims) != len(given) or any(
                g is not None and d is not None and g != d for g, d in zip(given, dims, strict=False))):
            raise flag_error("--inputs matching the graph",
                             f"--inputs {shape} contradicts the graph's {show_dims(dims)}")
        dims = given if dims is None else [d if d is not None else g for d, g in zip(dims, given, strict=True)]
    if value.type.tensor_type.elem_type != 1:
        raise InputFormatError(f"input {value.name!r} is not float32 (ONNX type {value.type.tensor_type.elem_type})"
                               "; faceembed feeds float32 tensors")
    if dims is None or len(dims) != 4:
        raise flag_error("--inputs NAME:N,C,H,W (or N,H,W,C)",
                         f"input {value.name!r} has shape {show_dims(dims)}, not a 4-D image batch")
    return value, dims


def show_dims(dims: Sequence[int | None] | None) -> str:
    """``[1, 3, ?, ?]`` (``?`` for symbolic axes) or ``unknown``."""
    return "unknown" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def layout_of(dims: list[int | None], flag: str | None, name: str) -> str:
    """NCHW when only position 1 holds 1 or 3 channels, NHWC when only position 3 does; else ``--layout``."""
    at1, at3 = dims[1] in (1, 3), dims[3] in (1, 3)
    graph = "NCHW" if at1 and not at3 else "NHWC" if at3 and not at1 else None
    if flag is not None and flag not in LAYOUTS:
        raise flag_error("--layout NCHW|NHWC", f"--layout {flag!r} is not a layout")
    if graph and flag and flag != graph:
        raise flag_error(f"--layout {graph} or leave it out", f"--layout {flag} contradicts the graph: input "
                    f"{name!r} is {show_dims(dims)}, {graph} (channels at position {1 if graph == 'NCHW' else 3})")
    layout = flag or graph
    if layout is None:
        raise flag_error("--layout NCHW|NHWC",
                         f"cannot tell the layout from the graph (input {name!r} is {show_dims(dims)})")
    channels = dims[1 if layout == "NCHW" else 3]
    if channels not in (None, 1, 3):
        raise flag_error("--layout", f"--layout {layout} puts {channels} channels at the channel position of "
                    f"{show_dims(dims)}; expected 1 or 3")
    return layout


def color_of(flag: str | None, channels: int | None, name: str) -> str:
    """The colour order: the caller's, checked against the channel count (GRAY <-> 1 channel)."""
    if flag is None:
        raise flag_error("--color RGB|BGR|GRAY", "cannot tell the colour order from the graph")
    if flag not in COLORS:
        raise flag_error("--color RGB|BGR|GRAY", f"--color {flag!r} is not a colour order")
    if channels is not None and (channels == 1) != (flag == "GRAY"):
        fix = "GRAY" if channels == 1 else "RGB or --color BGR"
        raise flag_error(f"--color {fix}", f"--color {flag} does not fit input {name!r} with {channels} channel(s)")
    return flag


def size_of(dims: list[int | None], layout: str, flag: tuple[int, int] | None, name: str) -> tuple[int, int]:
    """``(height, width)`` from the graph, or ``--size`` where the graph leaves them open (never contradicting)."""
    graph = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    if flag is not None:
        for g, f in zip(graph, flag, strict=True):
            if g is not None and g != f:
                raise flag_error(f"--size {graph[0] or '?'}x{graph[1] or '?'} or leave it out", f"--size "
                            f"{flag[0]}x{flag[1]} does not match the graph's input {name!r} {show_dims(dims)}")
        return flag
    if graph[0] is None or graph[1] is None:
        raise flag_error("--size HxW",
                         f"cannot tell the input size from the graph (input {name!r} is {show_dims(dims)})")
    return int(graph[0]), int(graph[1])


def normalisation_of(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int) -> tuple:
    """``(mean, std)`` tuples from the caller: required, 1 or ``channels`` numbers, std non-zero."""
    for flag, value in (("--mean", mean), ("--std", std)):
        if value is None:
            raise flag_error("--mean and --std",
                             f"cannot tell the input normalisation from the graph ({MEAN_STD_HINT})")
        if len(value) not in (1, channels):
            raise flag_error(f"{flag} with 1 or {channels} numbers", f"{flag} has {len(value)} numbers")
    if any(s == 0 for s in std):
        raise flag_error("--std with non-zero numbers", "--std 0 divides by zero")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def roles_of(names: list[str], embedding: str | None, outputs: Mapping[str, str] | None) -> tuple[OutputSpec, ...]:
    """Output roles: ``--outputs`` NAME:ROLE, ``--embedding`` NAME, or the only output as the embedding."""
    roles = {n: "other" for n in names}
    for name, role in (outputs or {}).items():
        if name not in roles:
            raise flag_error(f"--outputs naming outputs among {', '.join(names)}", f"--outputs names {name!r}")
        roles[name] = role
    if embedding is not None:
        if embedding not in roles:
            raise flag_error(f"--embedding one of {', '.join(names)}", f"the model has no output {embedding!r}")
        roles[embedding] = "mu" if roles[embedding] == "mu" else "embedding"
    elif len(names) == 1 and not outputs:
        roles[names[0]] = "embedding"
    emb = [n for n, r in roles.items() if r in ("embedding", "mu")]
    if len(emb) != 1:
        raise flag_error(f"--embedding NAME (one of {', '.join(names)})", f"the model has {len(names)} outputs and "
                    f"{len(emb)} marked as the embedding")
    return tuple(OutputSpec(n, roles[n]) for n in names)


def template_of(flag: str | None) -> str:
    """The alignment template: the caller's choice, one of the registry's names."""
    names = "|".join(TEMPLATE_NAMES)
    if flag is None:
        raise flag_error(f"--template {names}", "cannot tell the alignment template from the graph")
    if flag not in TEMPLATE_NAMES:
        raise flag_error(f"--template {names}", f"--template {flag!r} is not a template")
    return flag
