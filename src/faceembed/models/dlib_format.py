"""Read dlib's DNN files as data (no dlib import): the primitive encoding, a bounds-checked reader and the
network's layers, as ``dlib::serialize(net, out)`` writes them.

dlib's serialization format (``dlib/serialize.h``, ``dlib/dnn/{core,layers,input,loss}.h``,
``dlib/cuda/tensor.h``), as written by ``dlib::serialize(net, out)``:

* **integers** (every integral type but ``char``): one control byte, then the magnitude in little-endian
  order. The control byte's low 4 bits are the number of magnitude bytes, its high bit the sign
  (``0x80`` = negative). Zero is ``01 00``; 300 is ``02 2c 01``; -1 is ``81 01``.
* **bool**: one ASCII byte ``'1'`` or ``'0'``. **strings** (also the C string literals that name layer
  versions): the length as an integer, then the bytes.
* **float / double**: ``float_details``: the integer ``mantissa`` (int64) then ``exponent`` (int16), value
  ``mantissa * 2**exponent`` (exponents 32000/32001/32002 mean +inf/-inf/NaN). (The comment in serialize.h
  says exponent first; the code writes the mantissa first.)
* **tensor** (``resizable_tensor``): version 2, ``num_samples, k, nr, nc``, then ``n*k*nr*nc`` raw
  little-endian float32 values (row-major NCHW). **alias_tensor**: version 1 and the four sizes (no data).
* **network**: ``add_loss_layer`` = version 1, the loss details, the subnetwork. ``add_layer`` = version 2,
  the *subnetwork first*, then the layer details and its cached state (3 bools, ``x_grad``,
  ``cached_output``, ``params_grad``). The bottom ``add_layer`` (whose subnetwork is the input layer) =
  version 3: the input layer, the details, 3 bools, 3 tensors and ``_sample_expansion_factor``.
  ``add_tag_layer`` and ``add_skip_layer`` = version 1 then the subnetwork (their tag ids are template
  arguments, not in the file). So the file lists the outermost versions first, then the input layer, then
  the layers' details from the input upwards.

Layer details used by this network (the version string first):

* ``con_4`` (``con_5``/``con_6`` add ``use_bias`` / ``use_relu`` bools): ``params`` (the filters
  ``[num_filters, k, nr, nc]`` row-major, then ``num_filters`` biases), num_filters, nr, nc, stride_y,
  stride_x, padding_y, padding_x, the ``filters`` and ``biases`` alias tensors, 4 learning-rate / weight-decay
  multipliers (doubles). dlib's default padding is ``nr/2`` for stride 1 and **0 for any other stride**; the
  convolution is a cross-correlation with zero padding and output size ``1 + (n + 2p - f) / s``, as PyTorch's.
* ``affine_`` (``affine_2`` adds ``disabled``): ``params`` (gamma then beta), the ``gamma`` and ``beta``
  alias tensors, ``mode`` (0 = CONV_MODE: one gamma/beta per channel). It is dlib's inference form of
  ``bn_con``: ``y = gamma * x + beta``.
* ``relu_`` (``relu_2`` adds ``disabled``), ``add_prev_``: no data. ``add_prev`` sums two tensors of
  different shapes by zero-padding both to the larger size in every dimension (channels, rows, columns at the
  far end), which this network needs in its last two down-sampling blocks.
* ``max_pool_2`` / ``avg_pool_2``: nr, nc, stride_y, stride_x, padding_y, padding_x; windows start at
  ``r * stride - padding`` (PyTorch's convention); ``nr = nc = 0`` is ``avg_pool_everything``.
* ``fc_2`` (``fc_3`` adds ``use_bias``): num_outputs, num_inputs, ``params`` (a ``[num_inputs, num_outputs]``
  row-major matrix, ``y = x W``, plus a bias row when the layer has one), the ``weights`` and ``biases``
  alias tensors, bias mode (1 = no bias), 4 multipliers.
* ``input_rgb_image_sized``: ``avg_red, avg_green, avg_blue`` (floats), NR, NC. dlib's ``to_tensor`` makes
  ``(pixel - avg) / 256`` per channel, in R, G, B plane order. The file holds the defaults 122.782, 117.001,
  104.298.
* ``loss_metric_2``: margin, distance threshold (floats; 0.04 and 0.6 here). Its output is the raw ``fc``
  output: dlib does not L2-normalise face descriptors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.errors import CheckpointError

_INF, _NINF, _NAN = 32000, 32001, 32002


# ---- primitive encoding -------------------------------------------------------------------------------

def encode_int(value: int) -> bytes:
    """dlib's integer encoding (``ser_helper::pack_int``): control byte (size | 0x80 if negative), then the
    magnitude's bytes, little endian, as few as needed (at least one)."""
    value = int(value)
    neg = value < 0
    mag = -value if neg else value
    if mag >= 1 << 64:
        raise ValueError(f"{value} does not fit in 64 bits")
    body = bytearray()
    while True:
        body.append(mag & 0xFF)
        mag >>= 8
        if mag == 0:
            break
    return bytes([len(body) | (0x80 if neg else 0)]) + bytes(body)


def encode_string(text: str) -> bytes:
    """A std::string: its length (integer encoding) then the bytes."""
    raw = text.encode("latin-1")
    return encode_int(len(raw)) + raw


def encode_float(value: float) -> bytes:
    """A float/double as dlib's ``float_details``: mantissa then exponent, both integers."""
    if value != value:
        return encode_int(0) + encode_int(_NAN)
    if value in (float("inf"), float("-inf")):
        return encode_int(0) + encode_int(_INF if value > 0 else _NINF)
    if value == 0:
        return encode_int(0) + encode_int(0)
    m, e = math.frexp(value)
    mantissa, exponent = int(m * (1 << 53)), e - 53  # 53 digits: double precision (dlib uses the type's)
    while mantissa % 256 == 0:
        mantissa //= 256
        exponent += 8
    return encode_int(mantissa) + encode_int(exponent)


def encode_tensor(a: np.ndarray) -> bytes:
    """A resizable_tensor: version 2, the 4 sizes, then little-endian float32 data."""
    a = np.asarray(a, dtype="<f4")
    shape = tuple(a.shape) + (1,) * (4 - a.ndim)
    return encode_int(2) + b"".join(encode_int(s) for s in shape) + a.tobytes()


# ---- the reader ---------------------------------------------------------------------------------------

class DlibReader:
    """Sequential reader of dlib-serialized data. Every read past the end raises a one-line
    :class:`CheckpointError` naming the offset and what was being read."""

    def __init__(self, data: bytes, path: str | Path | None = None):
        self.data = memoryview(data)
        self.pos = 0
        self.path = Path(path) if path is not None else None
        self.context = "file"

    def fail(self, message: str) -> CheckpointError:
        return CheckpointError(f"dlib model file: {message} (at byte {self.pos}, while reading {self.context})",
                               self.path)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(
                f"truncated dlib model file: needs {n} more bytes at byte {self.pos} but the file has "
                f"{len(self.data)} (while reading {self.context})", self.path)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        """A signed integer (``unpack_int``); unsigned values use the same bytes."""
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def uint(self) -> int:
        value = self.int()
        if value < 0:
            raise self.fail(f"expected an unsigned integer, got {value}")
        return value

    def bool(self) -> bool:
        ch = self.take(1)[0]
        if ch not in (0x30, 0x31):
            raise self.fail(f"bad bool byte 0x{ch:02x} (expected '0' or '1')")
        return ch == 0x31

    def string(self, max_len: int = 1 << 16) -> str:
        n = self.uint()
        if n > max_len:
            raise self.fail(f"string of {n} bytes is implausibly long")
        return bytes(self.take(n)).decode("latin-1")

    def float(self) -> float:
        first = self.data[self.pos] if self.pos < len(self.data) else 0
        if first & 0x70:
            raise self.fail("old ASCII float format is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == _INF:
            return float("inf")
        if exponent == _NINF:
            return float("-inf")
        if exponent == _NAN:
            return float("nan")
        return math.ldexp(float(mantissa), exponent)

    def tensor(self) -> np.ndarray:
        """A resizable_tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative tensor size {shape}")
        n = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * n)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def peek_input_layer_name(self) -> bool:
        """Whether the next item is a string naming an input layer (``input...``), without consuming it."""
        save, ctx = self.pos, self.context
        try:
            return self.string(max_len=64).startswith("input")
        except CheckpointError:
            return False
        finally:
            self.pos, self.context = save, ctx


# ---- the network --------------------------------------------------------------------------------------

@dataclass
class DlibLayer:
    """One parsed layer: ``kind`` is the version string without its number (``con``, ``affine``, ``relu``,
    ``add_prev``, ``max_pool``, ``avg_pool``, ``fc``) or ``tag_or_skip`` (which of the two is not in the
    file); ``info`` its hyper-parameters, ``arrays`` its weights."""

    kind: str
    version: str
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: the loss, the input layer and the layers from the input upwards."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[DlibLayer]


def _read_con(r: DlibReader, version: str) -> DlibLayer:
    params = r.tensor()
    info = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(),
            "padding_y": r.int(), "padding_x": r.int()}
    filters = r.alias_tensor()
    biases = r.alias_tensor()
    info["multipliers"] = [r.float() for _ in range(4)]
    info["use_bias"] = r.bool() if version in ("con_5", "con_6") else True
    if version == "con_6":
        info["use_relu"] = r.bool()
    flat = params.reshape(-1)
    nf = int(np.prod(filters))
    if nf > flat.size or filters[0] != info["num_filters"]:
        raise r.fail(f"con filters {filters} do not fit params of {flat.size} values")
    arrays = {"weight": flat[:nf].reshape(filters)}
    if info["use_bias"]:
        nb = int(np.prod(biases))
        if nf + nb != flat.size or nb != info["num_filters"]:
            raise r.fail(f"con biases {biases} do not fit params of {flat.size} values")
        arrays["bias"] = flat[nf:nf + nb].copy()
    return DlibLayer("con", version, info, arrays)


def _read_affine(r: DlibReader, version: str) -> DlibLayer:
    params = r.tensor().reshape(-1)
    gamma = r.alias_tensor()
    beta = r.alias_tensor()
    mode = r.int()
    info = {"mode": "conv" if mode == 0 else "fc"}
    if version == "affine_2":
        info["disabled"] = r.bool()
    ng, nb = int(np.prod(gamma)), int(np.prod(beta))
    if ng + nb != params.size:
        raise r.fail(f"affine gamma {gamma} and beta {beta} do not fit params of {params.size} values")
    return DlibLayer("affine", version, info, {"gamma": params[:ng].reshape(gamma).copy(),
                                                "beta": params[ng:].reshape(beta).copy()})


def _read_pool(r: DlibReader, version: str) -> DlibLayer:
    info = {"nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int(), "padding_y": r.int(),
            "padding_x": r.int()}
    return DlibLayer(version.rsplit("_", 1)[0], version, info)


def _read_fc(r: DlibReader, version: str) -> DlibLayer:
    info: dict[str, Any] = {"num_outputs": r.int(), "num_inputs": r.int()}
    params = r.tensor().reshape(-1)
    weights = r.alias_tensor()
    biases = r.alias_tensor()
    info["bias"] = r.int() == 0  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    info["multipliers"] = [r.float() for _ in range(4)]
    if version == "fc_3":
        info["use_bias"] = r.bool()
    nin, nout = info["num_inputs"], info["num_outputs"]
    nw = int(np.prod(weights))
    if nw != nin * nout or nw > params.size:
        raise r.fail(f"fc weights {weights} do not fit {nin}x{nout} / params of {params.size} values")
    arrays = {"weight": params[:nw].reshape(nin, nout).copy()}  # y = x W
    if info["bias"]:
        arrays["bias"] = params[nw:nw + int(np.prod(biases))].copy()
    return DlibLayer("fc", version, info, arrays)


_LAYER_READERS = {
    "con_4": _read_con, "con_5": _read_con, "con_6": _read_con,
    "affine_": _read_affine, "affine_2": _read_affine,
    "max_pool_2": _read_pool, "avg_pool_2": _read_pool,
    "fc_2": _read_fc, "fc_3": _read_fc,
}


def _read_layer_details(r: DlibReader) -> DlibLayer:
    r.context = "a layer's version string"
    version = r.string(max_len=64)
    r.context = f"layer {version!r}"
    if version in _LAYER_READERS:
        return _LAYER_READERS[version](r, version)
    if version == "relu_":
        return DlibLayer("relu", version)
    if version == "relu_2":
        return DlibLayer("relu", version, {"disabled": r.bool()})
    if version == "add_prev_":
        return DlibLayer("add_prev", version)
    raise r.fail(f"unsupported layer type {version!r}")


def _read_layer_state(r: DlibReader) -> None:
    """The cached state after a layer's details: 3 bools, x_grad, cached_output, params_grad/grad_final."""
    r.context += " state"
    for _ in range(3):
        r.bool()
    for _ in range(3):
        r.tensor()


def _read_input(r: DlibReader) -> dict[str, Any]:
    r.context = "the input layer"
    name = r.string(max_len=64)
    if name not in ("input_rgb_image_sized", "input_rgb_image"):
        raise r.fail(f"unsupported input layer {name!r}")
    out: dict[str, Any] = {"type": name, "avg_rgb": [r.float(), r.float(), r.float()]}
    if name == "input_rgb_image_sized":
        out["nr"], out["nc"] = r.uint(), r.uint()
    return out


def _read_loss(r: DlibReader) -> dict[str, Any]:
    r.context = "the loss layer"
    if r.int() != 1:
        raise r.fail("not a dlib DNN file (add_loss_layer version is not 1)")
    name = r.string(max_len=64)
    if name == "loss_metric_2":
        return {"type": name, "margin": r.float(), "distance_threshold": r.float()}
    if name == "loss_metric_":
        return {"type": name}
    raise r.fail(f"unsupported loss layer {name!r}")


def parse_dlib_net(data: bytes, path: str | Path | None = None) -> DlibNet:
    """Parse a serialized dlib DNN (``add_loss_layer`` over ``add_layer``/tag/skip layers over an RGB input)."""
    r = DlibReader(data, path)
    loss = _read_loss(r)
    stack: list[int] = []
    r.context = "the layer versions"
    while True:
        version = r.int()
        if version == 3 or (version == 2 and r.peek_input_layer_name()):
            bottom_version = version
            break
        if version not in (1, 2):
            raise r.fail(f"unexpected layer version {version}")
        stack.append(version)
        if len(stack) > 10_000:
            raise r.fail("too many layers")
    inp = _read_input(r)
    layers = [_read_layer_details(r)]
    _read_layer_state(r)
    if bottom_version == 3:
        r.uint()  # _sample_expansion_factor
    for version in reversed(stack):
        if version == 1:
            layers.append(DlibLayer("tag_or_skip", ""))
        else:
            layers.append(_read_layer_details(r))
            _read_layer_state(r)
    if r.pos != len(r.data):
        r.context = "the end of the file"
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return DlibNet(loss, inp, layers)
