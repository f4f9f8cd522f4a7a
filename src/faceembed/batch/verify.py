"""``faceembed verify`` on files: pairs file + features written by ``infer`` (or an .npz) -> metrics, ROC PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
                 roc_plot: str | Path | None = None, json_out: str | Path | None = None) -> dict[str, Any]:
    """Score the pairs of ``pairs_path`` from feature files and return the metrics as a dict."""
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
    if json_out:
        write_json(json_out, out)
    return out
