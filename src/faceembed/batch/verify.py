"""``faceembed verify`` on files: pairs file + features written by ``infer`` (or an .npz) -> metrics, ROC PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.batch.features import read_features
from faceembed.data.lfw import read_pairs
from faceembed.errors import InputFormatError
from faceembed.evaluation.verification import verify_features
from faceembed.files import write_json

MU_NAMES = ("mu", "embedding")


def _pick(outputs: dict[str, dict], names: tuple[str, ...], source: Path) -> dict:
    for name in names:
        if name in outputs:
            return outputs[name]
    raise InputFormatError(f"features have outputs {sorted(outputs)}, none of {list(names)}", source)


def verify_files(pairs_path: str | Path, features: str | Path, metric: str = "cosine",
                 flip_features: str | Path | None = None, flip_mode: str = "concat", mean_subtract: bool = False,
                 roc_plot: str | Path | None = None, json_out: str | Path | None = None,
                 reject: Sequence[float] | None = None, detections: str | Path | None = None,
                 reject_plot: str | Path | None = None) -> dict[str, Any]:
    """Score the pairs of ``pairs_path`` from feature files and return the metrics as a dict. With ``reject``
    (fractions), also the uncertainty rejection curves (:func:`rejection_curves`)."""
    for flag, value, choices in (("metric", metric, ("cosine", "mls")), ("flip-mode", flip_mode, ("concat", "mean"))):
        if value not in choices:
            raise InputFormatError(f"--{flag} must be one of {', '.join(choices)}, not {value!r}")
    pairs = read_pairs(pairs_path)
    outputs = read_features(features)
    mu = _pick(outputs, MU_NAMES, Path(features))
    sigma = _pick(outputs, ("sigma_sq",), Path(features)) if metric == "mls" else None
    flips = _pick(read_features(flip_features), MU_NAMES, Path(flip_features)) if flip_features else None
    result = verify_features(pairs, mu, sigma_sq=sigma, metric=metric, flip_features=flips,
                             flip_mode=flip_mode if flips is not None else None, mean_subtract=mean_subtract)
    if roc_plot:
        from faceembed.evaluation.verification import roc
        from faceembed.report.roc import plot_roc

        far, tar, _ = roc(result.scores, result.same)
        plot_roc({f"{metric} (AUC {result.auc:.4f})": (far, tar)}, roc_plot)
    out = result.to_dict()
    if reject:
        sigma_all = _pick(outputs, ("sigma_sq",), Path(features)) if sigma is None else sigma
        out["rejection"] = rejection_curves(pairs, result.scores, result.same, result.folds, sigma_all,
                                            list(reject), detections)
        if reject_plot:
            from faceembed.report.rejection import plot_rejection

            plot_rejection(out["rejection"]["curves"], reject_plot,
                           title=f"{metric}: error after rejecting pairs ({len(pairs)} pairs, 10 folds)")
    if json_out:
        write_json(json_out, out)
    return out


def rejection_curves(pairs: Sequence[Any], scores: np.ndarray, same: np.ndarray, folds: np.ndarray,
                     sigma_sq: dict[str, np.ndarray], fractions: list[float],
                     detections: str | Path | None = None) -> dict[str, Any]:
    """10-fold accuracy and TAR at FAR 1e-3 after rejecting, in each fold, the given fraction of pairs: the most
    uncertain (a pair's uncertainty: the larger of its two faces' harmonic-mean sigma^2, see
    :func:`faceembed.evaluation.rejection.pair_uncertainty`), at random (mean of 10 draws), and, with
    ``detections`` (``faceembed detect``'s ``OUT.json``), those with the lowest MTCNN score."""
    from faceembed.evaluation.rejection import (
        detector_rejection_curve,
        pair_uncertainty,
        random_rejection_curve,
        rejection_curve,
    )

    for f in fractions:
        if not 0 <= f < 1:
            raise InputFormatError(f"--reject takes fractions in [0, 1), not {f}")
    sig = [np.stack([sigma_sq[getattr(p, k)] for p in pairs]) for k in ("relpath1", "relpath2")]
    curves = {"uncertainty (PFE)": rejection_curve(scores, same, folds, pair_uncertainty(*sig), fractions),
              "random": random_rejection_curve(scores, same, folds, fractions)}
    if detections is not None:
        faces = _detector_scores(detections)
        missing = sorted({r for p in pairs for r in (p.relpath1, p.relpath2) if r not in faces})
        if missing:
            raise InputFormatError(f"no detector score for {len(missing)} pair images (e.g. {missing[0]})", detections)
        det = [np.array([faces[getattr(p, k)] for p in pairs]) for k in ("relpath1", "relpath2")]
        curves["detector score"] = detector_rejection_curve(scores, same, folds, *det, fractions)
    return {"pair_uncertainty": "max of the two faces' harmonic-mean sigma^2", "curves": curves}


def _detector_scores(path: str | Path) -> dict[str, float]:
    import json

    path = Path(path)
    try:
        faces = json.loads(path.read_text(encoding="utf-8"))["faces"]
        return {rel: float(v["score"]) for rel, v in faces.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFormatError(f"not a detection summary of 'faceembed detect' ({exc})", path) from None
