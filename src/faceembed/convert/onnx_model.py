"""``faceembed import MODEL.onnx --out DST``: give any ONNX face model a model card.

What the graph tells is read from it (input name, layout and size of a 4-D input, fixed or dynamic batch, the
outputs and the embedding size); the rest comes from the caller (colour order, normalisation, alignment
template) or from a card the file already carries. A missing fact or a flag that contradicts the graph is one
InputFormatError naming the flag. A fixed batch axis is made dynamic when the rewritten graph still gives,
at batch 2, the rows it gives one image at a time; otherwise the batch stays fixed and the card records it.
The model is then run once through :func:`faceembed.data.preprocess.preprocess` on real-size random crops to
prove the card, and written atomically with the card in its metadata (the graph otherwise untouched).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.convert import onnx_graph as g
from faceembed.data.preprocess import preprocess
from faceembed.errors import InputFormatError, NonFiniteError
from faceembed.files import write_bytes
from faceembed.models.card import ROLES, ModelCard
from faceembed.models.card_io import card_from_export_metadata, card_from_onnx, card_to_onnx, load_onnx

log = logging.getLogger(__name__)


# ---- parsers for the command line ------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """``"112x96"`` -> ``(112, 96)`` (height x width, positive integers)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise InputFormatError(f"size {text!r} is not HEIGHTxWIDTH with positive integers (e.g. 112x96)")
    return int(m.group(1)), int(m.group(2))


def parse_floats(text: str) -> tuple[float, ...]:
    """``"127.5"`` -> ``(127.5,)``; ``"123.7,116.3,103.5"`` -> three numbers (finite)."""
    try:
        values = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise InputFormatError(f"{text!r} is not a comma-separated list of finite numbers (e.g. 127.5 or "
                               "123.7,116.3,103.5)")
    return values


def parse_inputs(text: str) -> list[tuple[str, list[int]]]:
    """``"input_x:-1,28,28,1"`` -> ``[("input_x", [-1, 28, 28, 1])]``; entries separated by ``;``, ``-1`` a
    dynamic axis. The name is everything before the last ``:`` (TensorFlow names such as ``x:0`` work)."""
    out: list[tuple[str, list[int]]] = []
    for entry in [e.strip() for e in str(text).split(";")]:
        name, sep, dims = entry.rpartition(":")
        if not sep or not name.strip() or not re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*)*", dims):
            raise InputFormatError(f"input {entry!r} is not NAME:D1,D2,... (e.g. input_x:-1,28,28,1)")
        shape = [int(d) for d in dims.split(",")]
        if any(d == 0 or d < -1 for d in shape):
            raise InputFormatError(f"input {entry!r}: dimensions are positive, or -1 for a dynamic axis")
        out.append((name.strip(), shape))
    return out


def parse_outputs(text: str) -> dict[str, str]:
    """``"mu:mu,sigma_sq:sigma_sq"`` -> ``{"mu": "mu", "sigma_sq": "sigma_sq"}`` (output name -> role)."""
    out: dict[str, str] = {}
    for entry in [e.strip() for e in str(text).split(",")]:
        name, sep, role = entry.rpartition(":")
        if not sep or not name.strip() or role.strip() not in ROLES:
            raise InputFormatError(f"output {entry!r} is not NAME:ROLE with ROLE one of {', '.join(ROLES)}")
        out[name.strip()] = role.strip()
    return out




# ---- running the model -----------------------------------------------------------------------------------

def _first_line(exc: Exception) -> str:
    """The useful part of an ONNX Runtime error: its status message without source locations, one line."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = text.split("Status Message:")[-1]
    text = re.sub(r"\S*onnxruntime_src\S*\s*|onnxruntime::\S+\(.*?\)\s*", "", text).strip()
    return text[:200]


def _session(model: Any) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures are reported as one line by the caller, not on stderr
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _crops(card: ModelCard, n: int, seed: int) -> np.ndarray:
    """``n`` random real-size uint8 RGB crops (different from each other, so mixed-up batch rows show)."""
    return np.random.default_rng(seed).integers(0, 256, (n, card.height, card.width, 3), dtype=np.uint8)


def _run(sess: Any, card: ModelCard, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {card.input_name: x}), strict=True))


def _with_dynamic_batch(model: Any, input_name: str, fixed: int, clear_shapes: bool) -> Any:
    """A copy whose input and outputs with the fixed batch ``fixed`` get the symbolic batch axis ``batch``
    (axes already symbolic are left as they are)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in [*(v for v in m.graph.input if v.name == input_name), *m.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == fixed:
            dims[0].dim_param = "batch"
    if clear_shapes:  # stale intermediate shapes with the fixed batch: ONNX Runtime infers them again
        del m.graph.value_info[:]
    return m


def _agree(got: np.ndarray, ref: np.ndarray) -> bool:
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    return got.shape == ref.shape and bool(np.allclose(got, ref, rtol=1e-3, atol=1e-4 * scale))


def _dynamic_batch(model: Any, card: ModelCard, fixed: int) -> tuple[Any | None, str]:
    """Try making the fixed batch axis dynamic; the rewrite must give, at batch 2, the fixed model's rows."""
    x = preprocess(_crops(card, 2, seed=1), card)
    base = _session(model)
    refs = [_run(base, card, np.repeat(x[i:i + 1], fixed, axis=0)) for i in range(2)]
    reason = "onnxruntime refuses batch 2"
    for clear in (False, True):
        candidate = _with_dynamic_batch(model, card.input_name, fixed, clear)
        try:
            got = _run(_session(candidate), card, x)
        except Exception as exc:  # ORT raises several types for shape errors (Reshape to a fixed batch...)
            reason = f"onnxruntime refuses batch 2 ({_first_line(exc)})"
            continue
        batched = [n for n, ref in refs[0].items() if ref.ndim and ref.shape[0] == fixed]
        if all(got[n].shape[0] == 2 and all(_agree(got[n][i:i + 1], refs[i][n][:1]) for i in range(2))
               for n in batched):
            return candidate, "the batch axis is dynamic (batch 2 gives the rows of one image at a time)"
        reason = "at batch 2 the rows differ from one image at a time (the graph mixes the batch)"
    return None, f"kept the fixed batch {fixed}: {reason}"


def _prove(model: Any, card: ModelCard) -> ModelCard:
    """Run the model once on real-size crops through :func:`preprocess`; the embedding size comes from it."""
    n = card.batch or 2
    x = preprocess(_crops(card, n, seed=0), card)
    try:
        sess = _session(model)
    except Exception as exc:
        raise InputFormatError(f"onnxruntime cannot load the model ({_first_line(exc)})") from None
    try:
        out = _run(sess, card, x)[card.embedding_output]
    except Exception as exc:
        raise InputFormatError(f"the model refuses a {list(x.shape)} {card.layout} float32 input "
                               f"({_first_line(exc)}): check --layout and --size") from None
    if out.ndim < 2 or out.shape[0] != n:
        raise InputFormatError(f"output {card.embedding_output!r} has shape {list(out.shape)} for a batch of "
                               f"{n}; expected [{n}, D]: check --embedding")
    if not np.isfinite(out).all():
        raise NonFiniteError(f"output {card.embedding_output!r} is not finite on real-size input: check --mean "
                             "and --std")
    return card.replace(embedding_size=int(math.prod(out.shape[1:])))


# ---- the import ------------------------------------------------------------------------------------------

def _prior(model: Any, src: Path) -> ModelCard | None:
    """The card the file already carries (or faceembed's export metadata), used for flags left out."""
    try:
        return card_from_onnx(model) or card_from_export_metadata(model, src)
    except InputFormatError:
        return None


def _pick(value: Any, prior: ModelCard | None, key: str) -> Any:
    return value if value is not None or prior is None else getattr(prior, key)


def _as(value: Any, parser: Any) -> Any:
    """Parse command-line text; a bare number stands for a one-number list (``mean=127.5``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value),)
    return parser(value) if isinstance(value, str) else value


def _keep_measurements(card: ModelCard, prior: ModelCard | None) -> ModelCard:
    """Thresholds and the quality reference measured for ``src`` (a faceembed export, a model imported before)
    stay with it when the new card feeds the graph the same way; flags that change that drop them."""
    same_feed = ("layout", "height", "width", "color", "mean", "std", "template", "outputs")
    if prior is None or any(getattr(card, k) != getattr(prior, k) for k in same_feed):
        return card
    return card.replace(thresholds=prior.thresholds, quality=prior.quality)


def import_onnx(
    src: str | Path, dst: str | Path, *, layout: str | None = None, color: str | None = None,
    mean: Sequence[float] | str | None = None, std: Sequence[float] | str | None = None,
    template: str | None = None, size: tuple[int, int] | str | None = None, embedding: str | None = None,
    outputs: Mapping[str, str] | str | None = None, arch: str | None = None,
    inputs: Sequence[tuple[str, list[int]]] | str | None = None, name: str | None = None,
) -> ModelCard:
    """Describe the ONNX model ``src`` with a card (graph facts + these flags), prove it by running the model,
    and write ``dst`` atomically with the card in its metadata. Returns the card (``batch`` None: dynamic).

    Flags left out fall back to a card ``src`` already carries. String flags are parsed as on the command
    line (``size="112x96"``, ``mean="127.5"``, ``outputs="mu:mu,sigma_sq:sigma_sq"``, ``inputs="x:-1,3,112,96"``).
    """
    src, dst = Path(src), Path(dst)
    model = load_onnx(src)
    prior = _prior(model, src)
    value, dims = g.image_input(model, _as(inputs, parse_inputs))
    lay = g.layout_of(dims, _pick(layout, prior, "layout"), value.name)
    col = g.color_of(_pick(color, prior, "color"), dims[1 if lay == "NCHW" else 3], value.name)
    prior_size = (prior.height, prior.width) if prior is not None else None
    height, width = g.size_of(dims, lay, _as(size, parse_size) or prior_size, value.name)
    m, s = g.normalisation_of(_as(_pick(mean, prior, "mean"), parse_floats), _as(_pick(std, prior, "std"),
                              parse_floats), 1 if col == "GRAY" else 3)
    prior_roles = {o.name: o.role for o in prior.outputs} if prior is not None and outputs is None else None
    roles = g.roles_of([o.name for o in model.graph.output], embedding, _as(outputs, parse_outputs) or prior_roles)
    card = ModelCard(value.name, lay, height, width, col, m, s, g.template_of(_pick(template, prior, "template")),
                     dims[0], roles, 1, "mls" if any(o.role == "sigma_sq" for o in roles) else "cosine",
                     arch=_pick(arch, prior, "arch"), name=name or src.stem, source=src.name)
    card = _keep_measurements(card, prior)
    fixed = card.batch or 1  # a declared dynamic batch is checked too: some graphs still fix it inside
    card = _prove(model, card.replace(batch=fixed))  # the card must hold at one batch before a rewrite is tried
    dynamic, how = _dynamic_batch(model, card, fixed)
    if dynamic is not None:
        model, card = dynamic, card.replace(batch=None)
    log.info("%s: %s", src.name, how)
    card = _prove(model, card)
    card_to_onnx(model, card)
    write_bytes(dst, model.SerializeToString())
    log.info("%s -> %s: %s", src.name, dst, card.to_json())
    return card
