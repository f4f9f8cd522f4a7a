"""The model card: everything a command needs to feed a face model and read its answer (docs/formats.md,
"Model card").

A card says how an aligned ``uint8`` crop becomes the input tensor (``input_name``, ``layout``, ``height``,
``width``, ``color``, ``x = (pixel - mean) / std`` per channel in the model's colour order, the alignment
``template``, a fixed or dynamic ``batch``), what the outputs mean (``outputs`` with roles,
``embedding_size``, ``similarity``) and, when measured, the verification ``thresholds`` and, for PFE models,
the face-``quality`` reference (``u_ref`` and the ``--min-quality`` values that reject 5 / 10 / 20 % of its
calibration faces). ONNX files carry it
as JSON in the metadata property ``faceembed.card``; faceembed checkpoints in ``extra["card"]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from faceembed.data.templates import TEMPLATE_NAMES
from faceembed.errors import InputFormatError

if TYPE_CHECKING:
    from faceembed.models.checkpoint import InputSpec

CARD_FORMAT = "faceembed-card"
CARD_VERSION = 1
ONNX_KEY = "faceembed.card"
ROLES = ("embedding", "mu", "sigma_sq", "logits", "feature_map", "other")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
SIMILARITIES = ("cosine", "mls")
NO_CARD_HINT = ("no model card: run 'faceembed import MODEL --out DST' with --color, --mean, --std and "
                "--template (and --layout / --size where the graph does not tell) to describe it")


def _bad(problems: list[str], what: str = "model card") -> InputFormatError:
    return InputFormatError(f"{what}: " + "; ".join(problems))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _choice(problems: list[str], field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        problems.append(f"'{field}' is {value!r}; allowed: {', '.join(allowed)}")


def _check_keys(d: Any, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> None:
    if not isinstance(d, dict):
        raise InputFormatError(f"{what} must be a JSON object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in required and k not in optional]
    problems = [f"lacks {', '.join(repr(k) for k in missing)}"] if missing else []
    if unknown:
        problems.append(f"has unknown {', '.join(repr(k) for k in unknown)} (allowed: "
                        f"{', '.join((*required, *optional))})")
    if problems:
        raise _bad(problems, what)


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One model output: its graph ``name`` and its ``role`` (one of :data:`ROLES`)."""

    name: str
    role: str

    def __post_init__(self) -> None:
        problems = [] if isinstance(self.name, str) and self.name else [f"'name' is {self.name!r}; need a name"]
        _choice(problems, "role", self.role, ROLES)
        if problems:
            raise _bad(problems, f"model card output {self.name!r}")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Similarity thresholds (higher score = more similar) measured at false-accept rates.

    ``far`` maps the rate as text (``"1e-3"``) to the threshold; ``best_accuracy`` is the threshold of the best
    verification accuracy and ``accuracy`` that accuracy (fraction), when measured.
    """

    metric: str
    dataset: str
    protocol: str
    far: dict[str, float]
    best_accuracy: float | None = None
    accuracy: float | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        _choice(problems, "metric", self.metric, SIMILARITIES)
        for key in ("dataset", "protocol"):
            if not isinstance(getattr(self, key), str):
                problems.append(f"'{key}' is {getattr(self, key)!r}; need a text")
        if not isinstance(self.far, dict):
            problems.append(f"'far' is {self.far!r}; need an object rate -> threshold")
        else:
            for rate, value in self.far.items():
                if not _far_rate_ok(rate) or not _is_num(value):
                    problems.append(f"'far' entry {rate!r}: {value!r}; need a rate in (0, 1) as text and a number")
        if self.best_accuracy is not None and not _is_num(self.best_accuracy):
            problems.append(f"'best_accuracy' is {self.best_accuracy!r}; need a number or null")
        if self.accuracy is not None and not (_is_num(self.accuracy) and 0.0 <= self.accuracy <= 1.0):
            problems.append(f"'accuracy' is {self.accuracy!r}; need a fraction in [0, 1] or null")
        if problems:
            raise _bad(problems, "model card thresholds")

    def at(self, far: float) -> float | None:
        """The threshold calibrated at exactly ``far`` (the rates are kept as text: ``"0.001"``), or None."""
        key = next((k for k in self.far if float(k) == float(far)), None)
        return None if key is None else float(self.far[key])


@dataclasses.dataclass(frozen=True)
class Quality:
    """A PFE model's face-quality reference (:func:`faceembed.evaluation.rejection.face_quality`).

    ``u_ref`` is the median face uncertainty (harmonic-mean sigma^2) of the calibration faces, so quality
    ``q = u_ref / (u_ref + u)`` is 0.5 for the median face; ``min_quality_for_reject`` maps a fraction as text
    (``"0.1"``) to the ``--min-quality`` value ``Q`` that rejects that fraction of those faces; ``protocol``
    says which faces they were.
    """

    u_ref: float
    min_quality_for_reject: dict[str, float]
    protocol: str

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not (_is_num(self.u_ref) and self.u_ref > 0):
            problems.append(f"'u_ref' is {self.u_ref!r}; need a positive number")
        if not isinstance(self.protocol, str):
            problems.append(f"'protocol' is {self.protocol!r}; need a text")
        problems += _reject_problems(self.min_quality_for_reject)
        if problems:
            raise _bad(problems, "model card quality")


def _reject_problems(table: Any) -> list[str]:
    """Problems of ``min_quality_for_reject``: fractions in (0, 1) as text -> qualities in (0, 1], the qualities
    not decreasing as the fraction grows (a larger share is rejected by a higher bar)."""
    if not isinstance(table, dict):
        return [f"'min_quality_for_reject' is {table!r}; need an object fraction -> quality"]
    bad = [f"'min_quality_for_reject' entry {k!r}: {v!r}; need a fraction in (0, 1) as text and a quality in (0, 1]"
           for k, v in table.items() if not (_far_rate_ok(k) and _is_num(v) and 0.0 < v <= 1.0)]
    if bad:
        return bad
    ordered = [table[k] for k in sorted(table, key=float)]
    if any(b < a for a, b in zip(ordered, ordered[1:], strict=False)):
        return [f"'min_quality_for_reject' {table!r}: the quality must not fall as the fraction grows"]
    return []


def _far_rate_ok(rate: Any) -> bool:
    try:
        return isinstance(rate, str) and 0.0 < float(rate) < 1.0
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """How to feed a face model and read it; see the module docstring and docs/formats.md."""

    input_name: str
    layout: str
    height: int
    width: int
    color: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    template: str
    batch: int | None
    outputs: tuple[OutputSpec, ...]
    embedding_size: int
    similarity: str
    thresholds: Thresholds | None = None
    arch: str | None = None
    name: str | None = None
    source: str | None = None
    quality: Quality | None = None  # PFE models: the face-quality reference (omitted from the JSON when None)

    def __post_init__(self) -> None:
        for key in ("mean", "std", "outputs"):  # lists are accepted and stored as tuples
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        for key in ("mean", "std"):
            v = getattr(self, key)
            if isinstance(v, tuple) and all(_is_num(x) for x in v):
                object.__setattr__(self, key, tuple(float(x) for x in v))
        problems = self._problems()
        if problems:
            raise _bad(problems)

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not (isinstance(self.input_name, str) and self.input_name):
            p.append(f"'input_name' is {self.input_name!r}; need the graph input's name")
        _choice(p, "layout", self.layout, LAYOUTS)
        _choice(p, "color", self.color, COLORS)
        _choice(p, "template", self.template, TEMPLATE_NAMES)
        _choice(p, "similarity", self.similarity, SIMILARITIES)
        for key in ("height", "width", "embedding_size"):
            if not (_is_int(getattr(self, key)) and getattr(self, key) > 0):
                p.append(f"'{key}' is {getattr(self, key)!r}; need a positive integer")
        if self.batch is not None and not (_is_int(self.batch) and self.batch > 0):
            p.append(f"'batch' is {self.batch!r}; need a positive integer or null (dynamic)")
        p += self._normalisation_problems()
        p += self._output_problems()
        if self.thresholds is not None and not isinstance(self.thresholds, Thresholds):
            p.append(f"'thresholds' is {self.thresholds!r}; need a Thresholds object or null")
        if self.quality is not None and not isinstance(self.quality, Quality):
            p.append(f"'quality' is {self.quality!r}; need a Quality object or null")
        roles = [o.role for o in self.outputs if isinstance(o, OutputSpec)] if isinstance(self.outputs, tuple) else []
        if self.quality is not None and "sigma_sq" not in roles:
            p.append("'quality' is set but no output has role 'sigma_sq'")
        for key in ("arch", "name", "source"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                p.append(f"'{key}' is {getattr(self, key)!r}; need a text or null")
        return p

    def _normalisation_problems(self) -> list[str]:
        p: list[str] = []
        n = 1 if self.color == "GRAY" else 3
        for key in ("mean", "std"):
            v = getattr(self, key)
            if not (isinstance(v, tuple) and len(v) in (1, n) and all(_is_num(x) for x in v)):
                p.append(f"'{key}' is {v!r}; need 1 or {n} finite numbers (one per channel, {self.color} order)")
            elif key == "std" and any(x == 0 for x in v):
                p.append(f"'std' is {v!r}; need non-zero numbers")
        return p

    def _output_problems(self) -> list[str]:
        if not (isinstance(self.outputs, tuple) and self.outputs and
                all(isinstance(o, OutputSpec) for o in self.outputs)):
            return [f"'outputs' is {self.outputs!r}; need a non-empty list of {{name, role}}"]
        p: list[str] = []
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            p.append(f"'outputs' names repeat: {names}")
        emb = [o.name for o in self.outputs if o.role in ("embedding", "mu")]
        if len(emb) != 1:
            p.append(f"'outputs' need exactly one output of role 'embedding' or 'mu', got {len(emb)}")
        if self.similarity == "mls" and not any(o.role == "sigma_sq" for o in self.outputs):
            p.append("'similarity' is 'mls' but no output has role 'sigma_sq'")
        return p

    @property
    def channels(self) -> int:
        """1 for GRAY, 3 for RGB / BGR."""
        return 1 if self.color == "GRAY" else 3

    @property
    def embedding_output(self) -> str:
        """Name of the output of role ``"mu"`` or ``"embedding"``."""
        return next(o.name for o in self.outputs if o.role in ("embedding", "mu"))

    def output(self, role: str) -> str | None:
        """Name of the first output of ``role``, or None."""
        if role not in ROLES:
            raise InputFormatError(f"unknown output role {role!r}; allowed: {', '.join(ROLES)}")
        return next((o.name for o in self.outputs if o.role == role), None)

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON form (docs/formats.md)."""
        d = {"format": CARD_FORMAT, "version": CARD_VERSION, **dataclasses.asdict(self)}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["outputs"] = [dataclasses.asdict(o) for o in self.outputs]
        if self.quality is None:  # absent, not null: the JSON of every card without it stays as it was
            del d["quality"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Parse and validate the JSON form; any problem is one InputFormatError naming the fields."""
        fields = [f.name for f in dataclasses.fields(cls)]
        required = tuple(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
        _check_keys(d, required, (*[f for f in fields if f not in required], "format", "version"), "model card")
        if d.get("format", CARD_FORMAT) != CARD_FORMAT or d.get("version", CARD_VERSION) != CARD_VERSION:
            raise InputFormatError(f"model card: format {d.get('format')!r} version {d.get('version')!r}; "
                                   f"expected {CARD_FORMAT!r} version {CARD_VERSION}")
        kw = {k: d[k] for k in fields if k in d}
        kw["outputs"] = _outputs_from(kw["outputs"])
        if kw.get("thresholds") is not None:
            kw["thresholds"] = _thresholds_from(kw["thresholds"])
        if kw.get("quality") is not None:
            kw["quality"] = _quality_from(kw["quality"])
        return cls(**kw)

    def to_json(self, indent: int | None = None) -> str:
        """The JSON form as text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse :meth:`to_json` text."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputFormatError(f"model card is not JSON ({exc})") from None
        return cls.from_dict(d)


def _outputs_from(value: Any) -> tuple[OutputSpec, ...]:
    if not isinstance(value, list):
        raise InputFormatError(f"model card: 'outputs' is {value!r}; need a list of {{name, role}}")
    for item in value:
        _check_keys(item, ("name", "role"), (), "model card output")
    return tuple(OutputSpec(item["name"], item["role"]) for item in value)


def _thresholds_from(value: Any) -> Thresholds:
    _check_keys(value, ("metric", "dataset", "protocol", "far"), ("best_accuracy", "accuracy"),
                "model card thresholds")
    return Thresholds(**value)


def _quality_from(value: Any) -> Quality:
    _check_keys(value, ("u_ref", "min_quality_for_reject", "protocol"), (), "model card quality")
    return Quality(**value)


# ---- faceembed's own checkpoints and exports ------------------------------------------------------------

_ROLE_OF_NAME = {"embedding": "embedding", "mu": "mu", "sigma_sq": "sigma_sq", "logits": "logits"}


def _template_for(spec: InputSpec) -> str:
    if spec.color == "GRAY" or spec.channels == 1:
        return "none"
    if spec.height * 96 == spec.width * 112:
        return "sphereface"
    return "arcface" if spec.height == spec.width else "none"


def card_from_input_spec(spec: InputSpec, arch: str | None = None, embedding_size: int | None = None,
                         name: str | None = None, source: str | None = None) -> ModelCard:
    """The card of a faceembed checkpoint or export: NHWC, scalar mean / scale, dynamic batch, template
    ``sphereface`` (112:96 crops), ``arcface`` (square RGB) or ``none`` (gray, e.g. MNIST 28x28).

    ``embedding_size`` is required: an InputSpec does not record it (read it from the graph or the config).
    """
    if embedding_size is None:
        raise InputFormatError("card_from_input_spec needs the embedding size (from the graph or the config)")
    outputs = tuple(OutputSpec(n, _ROLE_OF_NAME.get(n, "other")) for n in spec.output_names)
    similarity = "mls" if any(o.role == "sigma_sq" for o in outputs) else "cosine"
    return ModelCard(spec.input_name, "NHWC", spec.height, spec.width, spec.color, (float(spec.mean),),
                     (float(spec.scale),), _template_for(spec), None, outputs, int(embedding_size), similarity,
                     arch=arch, name=name, source=source)
