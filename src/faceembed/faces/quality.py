"""Face quality from a PFE model's uncertainty, for every command that reports faces.

A PFE model (outputs ``mu`` and ``sigma_sq``) gives each face an uncertainty ``u`` (the harmonic mean of its
sigma^2, :func:`faceembed.evaluation.rejection.face_uncertainty`); a model whose card holds a ``quality``
reference (``u_ref``, written by ``train-pfe``) turns it into a quality ``q = u_ref / (u_ref + u)`` in (0, 1],
0.5 for the median validation face. ``--min-quality Q`` sets aside the faces with ``q < Q``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceembed.errors import FaceembedError
from faceembed.evaluation.rejection import face_quality, face_uncertainty
from faceembed.models.card import ModelCard


def has_sigma_sq(card: ModelCard) -> bool:
    """True for a model with a ``sigma_sq`` output (a PFE model)."""
    return card.output("sigma_sq") is not None


def uncertainties(card: ModelCard, sigma_sq: np.ndarray | None) -> np.ndarray | None:
    """Per-face uncertainty (N,) float64 from sigma^2 (N, D), or None for a model without ``sigma_sq``."""
    if sigma_sq is None or not has_sigma_sq(card):
        return None
    return face_uncertainty(sigma_sq) if len(sigma_sq) else np.zeros(0)


def qualities(card: ModelCard, sigma_sq: np.ndarray | None) -> np.ndarray | None:
    """Per-face quality (N,) float64 in (0, 1], or None when the card has no quality reference."""
    if sigma_sq is None or card.quality is None:
        return None
    return face_quality(sigma_sq, card.quality.u_ref) if len(sigma_sq) else np.zeros(0)


def check_quality_value(min_quality: float | None) -> None:
    """Refuse a ``--min-quality`` that is not a number in [0, 1] (None passes)."""
    ok = isinstance(min_quality, int | float) and not isinstance(min_quality, bool) and 0.0 <= min_quality <= 1.0
    if min_quality is not None and not ok:
        raise FaceembedError(f"--min-quality must be a quality between 0 and 1 (e.g. 0.4), not {min_quality!r}")


def check_min_quality(card: ModelCard, min_quality: float | None, model: object = None) -> None:
    """Refuse ``--min-quality`` outside [0, 1] or for a model that cannot give a quality, in one line."""
    if min_quality is None:
        return
    check_quality_value(min_quality)
    name = card.name or (str(model) if model is not None else "the model")
    if not has_sigma_sq(card):
        raise FaceembedError(f"--min-quality needs a PFE model (outputs sigma_sq); {name} has no uncertainty "
                             "output")
    if card.quality is None:
        raise FaceembedError(f"--min-quality: the card of {name} has no quality reference (u_ref); a head "
                             "trained by 'faceembed train-pfe' has one")


def set_aside(relpaths: Sequence[str], quality: np.ndarray | None,
              min_quality: float | None) -> tuple[list[str], list[dict]]:
    """(faces kept, faces set aside as ``{"image", "quality", "reason"}``) for ``--min-quality``: a face is kept
    when its quality is at least ``min_quality`` (no quality or no ``min_quality``: all kept)."""
    if min_quality is None or quality is None:
        return list(relpaths), []
    kept, aside = [], []
    for rel, q in zip(relpaths, quality, strict=True):
        if q >= min_quality:
            kept.append(rel)
        else:
            aside.append({"image": rel, "quality": round(float(q), 4), "reason": below_reason(float(q), min_quality)})
    return kept, aside


def below_reason(quality: float, min_quality: float) -> str:
    """``"quality 0.31 < 0.4"``: the quality cut (never rounded up) to the fewest decimals that show it is below."""
    import math

    for digits in (2, 3, 4, 6, 9):
        shown = math.floor(quality * 10 ** digits) / 10 ** digits
        if shown < min_quality:
            return f"quality {shown:.{digits}f} < {min_quality:g}"
    return f"quality {quality!r} < {min_quality!r}"


def face_report(card: ModelCard, sigma_sq: np.ndarray | None) -> list[dict[str, float | None]] | None:
    """``[{"uncertainty", "quality"}]`` per face for a PFE model (quality None without a reference), else None."""
    u = uncertainties(card, sigma_sq)
    if u is None:
        return None
    q = qualities(card, sigma_sq)
    return [{"uncertainty": float(u[i]), "quality": None if q is None else round(float(q[i]), 4)}
            for i in range(len(u))]
