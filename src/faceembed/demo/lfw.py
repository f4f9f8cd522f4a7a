"""``faceembed demo lfw``: PFE on LFW end to end, through the same public functions as the CLI.

import MobileFaceNet (or take ``--backbone``) -> align LFW -> train the 10 cross-fold uncertainty heads (each on
the people outside its fold, stopped on held-out training people) -> export each fold's PFE model (backbone +
head) to ONNX fp32 and fp16 with a parity check, and to int8 (calibrated on images of the other folds' people,
run by OpenVINO) -> run PyTorch and the three exports on every pair image and its mirror image (fold k's images
through fold k's model only; each run's features are kept in ``OUT/features/HEADS/RUN.npz``, which ``verify``
reads)
-> verify by cosine, MLS, and cosine with flip + mean subtraction, 10-fold -> latency of the exported model at
batch 1 and 32. Rerunning resumes.
"""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from faceembed.demo.common import StepTimer, console
from faceembed.errors import MissingInputError
from faceembed.files import write_json
from faceembed.inference.backends import run_batched

WEIGHTS = "weights/mobilefacenet_casia_112x96.ckpt"
# run -> (backend, file precision, runtime precision)
RUNS = {"pytorch": ("torch", None, None), "onnx_fp32": ("ort", "fp32", None), "onnx_fp16": ("ort", "fp16", None),
        "openvino_int8": ("openvino", "int8", "int8")}
CALIBRATION_IMAGES = 256
QUICK_RUNS = ("pytorch", "onnx_fp32", "openvino_int8")  # --quick: no fp16 row, no mirror images, no int8 search


def _fold_model(out: Path, key: str, fold: int, parity: Path, calibration: np.ndarray | None = None,
                search: bool = True):
    """The backend that runs fold ``fold``'s PFE model for run ``key``, exporting (or quantizing on
    ``calibration``, images of people outside the fold; ``search``: the float-layer search) on first use."""
    from faceembed.export.export_model import export_checkpoint
    from faceembed.inference.backends import load_backend

    ckpt = out / "pfe" / "heads" / f"fold_{fold:02d}.pt"
    backend, file_precision, precision = RUNS[key]
    if backend == "torch":
        return load_backend(ckpt, "torch")
    onnx_path = _onnx_path(out, fold, file_precision)
    if not onnx_path.exists() and file_precision == "int8":
        from faceembed.export.quantize import quantize_model

        fp32 = _onnx_path(out, fold, "fp32")
        if not fp32.exists():
            export_checkpoint(ckpt, fp32, parity_input=parity)
        assert calibration is not None, "int8 needs calibration images"
        quantize_model(fp32, calibration, onnx_path, max_images=len(calibration),
                       **({} if search else {"min_cosine": None}))
    elif not onnx_path.exists():
        export_checkpoint(ckpt, onnx_path, fp16=file_precision == "fp16", parity_input=parity)
    return load_backend(onnx_path, backend, precision=precision)


def _onnx_path(out: Path, fold: int, precision: str) -> Path:
    return out / "onnx" / _heads_digest(out) / f"pfe_fold_{fold:02d}_{precision}.onnx"


def _heads_digest(out: Path) -> str:
    """A short digest of the 10 trained heads: exports and features are kept under it, so that heads trained
    again (another backbone, another config) never meet the files of the old ones. Hashed once per state of the
    head files (path, size, mtime), not on every model load."""
    heads = [out / "pfe" / "heads" / f"fold_{k:02d}.pt" for k in range(10)]
    return _digest_of(tuple((str(h), h.stat().st_size, h.stat().st_mtime_ns) for h in heads))


@functools.lru_cache(maxsize=8)
def _digest_of(stamps: tuple[tuple[str, int, int], ...]) -> str:
    from faceembed.files import file_sha256

    return hashlib.sha256("".join(file_sha256(path) for path, _, _ in stamps).encode()).hexdigest()[:12]


def _features_path(out: Path, key: str) -> Path:
    return out / "features" / _heads_digest(out) / f"{key}.npz"


def _run_features(out: Path, key: str, x: np.ndarray, x_flip: np.ndarray | None, names: list[str],
                  fold_rows: list[np.ndarray], parity: Path) -> dict[str, np.ndarray]:
    """``{"names", "mu", "sigma_sq"}`` (+ ``"mu_flip"`` with ``x_flip``) of every pair image, fold k's images
    through fold k's model (without ``x_flip``: the quick version, int8 without the float-layer search);
    kept in ``OUT/features/HEADS/KEY.npz`` (``HEADS``: the digest of the heads that made them; a rerun reads it)."""
    from faceembed.files import write_with

    path = _features_path(out, key)
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    mu = sig = mu_flip = None
    for k in range(10):
        rows = fold_rows[k]
        others = np.setdiff1d(np.arange(len(x)), rows)  # other folds' images: people outside fold k
        calib = x[others[np.linspace(0, len(others) - 1, CALIBRATION_IMAGES).astype(int)]]
        backend = _fold_model(out, key, k, parity, calib, search=x_flip is not None)
        m, s = run_batched(backend, x[rows])
        if mu is None:
            mu, sig, mu_flip = (np.zeros((len(names), m.shape[1]), np.float32) for _ in range(3))
        mu[rows], sig[rows] = m, s
        if x_flip is not None:
            mu_flip[rows] = run_batched(backend, x_flip[rows])[0]
    feats = {"names": np.array(names), "mu": mu, "sigma_sq": sig}
    if x_flip is not None:
        feats["mu_flip"] = mu_flip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, lambda tmp: _savez(tmp, feats))
    return feats


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def run_lfw_demo(out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
                 quick: bool = False, progress: bool = True, backbone: str | None = None,
                 detections: str | Path | None = None) -> dict[str, Any]:
    """Run the PFE pipeline on LFW View 2 (6,000 pairs, 10 folds) and print the results table. ``backbone``: a
    model name or file with a card and a feature map (default: the shared MobileFaceNet checkpoint).
    ``detections`` (``faceembed detect``'s ``OUT.json`` of the LFW images) adds rejection by detector score to
    the uncertainty-versus-random rejection curves (:func:`rejection`)."""
    from faceembed.batch.tobin import face_tensors
    from faceembed.convert.torch_state import import_checkpoint
    from faceembed.data.lfw import pair_images, read_landmarks, read_pairs
    from faceembed.evaluation.verification import verify_features
    from faceembed.faces.align_files import align_images_in_memory
    from faceembed.inference.timing import latency_per_image
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model
    from faceembed.training.train_pfe import PFETrainConfig, train_pfe_crossfold

    data = Path(data or "../shared/data")
    lfw, out = data / "lfw", Path(out)
    if not (lfw / "pairs.txt").is_file() or (backbone is None and not (data / WEIGHTS).is_file()):
        raise MissingInputError(f"LFW and {WEIGHTS} expected under --data", data)
    t_start = time.perf_counter()
    step = StepTimer()
    if backbone is None:
        backbone = out / "mobilefacenet.pt"
        if not backbone.exists():
            step(f"import {data / WEIGHTS} -> {backbone}")
            import_checkpoint(data / WEIGHTS, backbone)
    else:
        backbone = resolve_model(backbone)
        out = out / f"backbone-{Path(backbone).stem}"
    card = read_card(backbone)

    step("train the 10 cross-fold PFE heads (features cached; each fold's head never sees its people)")
    config = PFETrainConfig(max_steps=60) if quick else PFETrainConfig()
    torch_results = train_pfe_crossfold(backbone, lfw, lfw / "lfw_landmark.txt", out / "pfe", config,
                                        progress=progress)

    pairs = read_pairs(lfw / "pairs.txt")
    names = pair_images(pairs)
    step(f"align the {len(names)} pair images")
    faces = align_images_in_memory(lfw / "images", read_landmarks(lfw / "lfw_landmark.txt"), names,
                                   size=(card.height, card.width), progress=progress, template=card.template)
    x, x_flip = face_tensors(faces, card), None if quick else face_tensors(faces, card, flip=True)
    runs = QUICK_RUNS if quick else tuple(RUNS)
    parity = out / "parity_faces.npy"
    if not parity.exists():
        out.mkdir(parents=True, exist_ok=True)
        np.save(parity, x[:32])
    row = {n: i for i, n in enumerate(names)}
    fold_rows = [np.unique([row[r] for p in pairs if p.fold == k for r in (p.relpath1, p.relpath2)])
                 for k in range(10)]

    result: dict[str, Any] = {"pairs": len(pairs), "folds": 10, "cosine": {}, "mls": {},
                              "cosine_flip_meansub": {}, "auc": {}, "tar_at_far_1e-3": {}}
    for key in runs:
        step(f"{key}: run every fold's model on its pair images" + ("" if quick else " and their mirror images"))
        run = _run_features(out, key, x, x_flip, names, fold_rows, parity)
        feats, sigmas = (dict(zip(names, run[k], strict=True)) for k in ("mu", "sigma_sq"))
        cos = verify_features(pairs, feats, metric="cosine", flip_mode=None)
        mls = calibrated_mls(pairs, verify_features(pairs, feats, sigma_sq=sigmas, metric="mls", flip_mode=None),
                             torch_results["folds"])
        result["cosine"][key], result["mls"][key] = cos.accuracy, mls.accuracy
        if "mu_flip" in run:
            flips = dict(zip(names, run["mu_flip"], strict=True))
            result["cosine_flip_meansub"][key] = verify_features(
                pairs, feats, metric="cosine", flip_features=flips, flip_mode="concat", mean_subtract=True).accuracy
        result["auc"][key] = {"cosine": cos.auc, "mls": mls.auc}
        result["tar_at_far_1e-3"][key] = {"cosine": cos.tar_at_far.get("0.001"), "mls": mls.tar_at_far.get("0.001")}
        if key == "onnx_fp32":
            step("rejection curves of the exported fp32 model: most uncertain pairs, at random, by detector score")
            result["rejection"] = rejection(pairs, {"cosine": cos, "mls": mls}, sigmas, out, detections)

    step("latency of the exported PFE model (ONNX Runtime fp32, OpenVINO int8)")
    result["latency_ms_per_image"] = {key: latency_per_image(_fold_model(out, key, 0, parity), x[:32], (1, 32))
                                      for key in ("onnx_fp32", "openvino_int8")}
    result["features"] = {key: str(_features_path(out, key)) for key in runs}
    result["backbone"] = card.name or Path(backbone).stem
    result["pfe_training"] = {"cosine": torch_results["cosine"], "mls": torch_results["mls"],
                              "timing_s": torch_results.get("timing_s")}
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["step_seconds"] = step.stop()
    _lfw_table(result)
    if json_path:
        write_json(json_path, result)
    console.print(f"done in {result['seconds']:.0f} s")
    return result


def rejection(pairs, results: dict[str, Any], sigma_sq: dict[str, np.ndarray], out: Path,
              detections: str | Path | None) -> dict[str, Any]:
    """Error and TAR at FAR 1e-3 after rejecting 0-20% of each fold's pairs (most uncertain first, at random, by
    detector score) for each metric's scores; plots ``OUT/rejection_METRIC.png``."""
    from faceembed.batch.verify import rejection_curves
    from faceembed.evaluation.rejection import DEFAULT_FRACTIONS
    from faceembed.report.rejection import plot_rejection

    curves = {}
    for metric, res in results.items():
        curves[metric] = rejection_curves(pairs, res.scores, res.same, res.folds, sigma_sq, list(DEFAULT_FRACTIONS),
                                          detections)
        plot_rejection(curves[metric]["curves"], out / f"rejection_{metric}.png",
                       title=f"{metric}: error after rejecting pairs (LFW, 6,000 pairs, 10 folds)")
        curves[metric]["plot"] = str(out / f"rejection_{metric}.png")
    return curves


def calibrated_mls(pairs, raw, fold_info: list[dict[str, Any]]):
    """Apply each fold head's calibration, fitted on that head's validation people only (train_pfe:
    a * MLS + b, the log-odds of "same"); then the 10-fold protocol again."""
    from dataclasses import replace

    from faceembed.evaluation.scores import apply_calibration
    from faceembed.evaluation.verification import auc, tar_at_far, ten_fold_accuracy

    scores = raw.scores.copy()
    for k, info in enumerate(fold_info):
        sel = raw.folds == k
        scores[sel] = apply_calibration(scores[sel], info["calibration"])
    acc = ten_fold_accuracy(scores, raw.same, raw.folds)
    return replace(raw, scores=scores, accuracy=acc["mean"], accuracy_std=acc["std"],
                   fold_accuracies=acc["per_fold"], thresholds=acc["thresholds"], auc=auc(scores, raw.same),
                   tar_at_far={"0.001": tar_at_far(scores, raw.same, 1e-3)})


def _lfw_table(result: dict[str, Any]) -> None:
    name = result.get("backbone", "MobileFaceNet")
    table = Table(title=f"PFE ({name} + uncertainty head) on LFW, {result['pairs']} pairs, 10-fold")
    for col in ("model", "cosine", "MLS", "cosine flip + mean-sub", "ms/image b1", "ms/image b32"):
        table.add_column(col, justify="right" if col != "model" else "left")
    lat = result.get("latency_ms_per_image", {})
    for key in result["cosine"]:
        lk, fms = lat.get(key, {}), result["cosine_flip_meansub"].get(key)
        table.add_row(key, f"{result['cosine'][key]:.4f}", f"{result['mls'][key]:.4f}",
                      "" if fms is None else f"{fms:.4f}",
                      f"{lk['1']:.2f}" if "1" in lk else "", f"{lk['32']:.2f}" if "32" in lk else "")
    Console().print(table)
    for metric, rej in result.get("rejection", {}).items():
        at = {name: next(r for r in rows if abs(r["fraction"] - 0.1) < 1e-9) for name, rows in rej["curves"].items()}
        base = next(r for r in next(iter(rej["curves"].values())) if r["fraction"] == 0)
        Console().print(f"{metric}: error {100 * base['error']:.2f}% -> rejecting 10% of pairs: " + ", ".join(
            f"{name} {100 * r['error']:.2f}%" for name, r in at.items()))
