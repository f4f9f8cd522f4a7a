"""``faceembed demo lfw``: PFE on LFW end to end, through the same public functions as the CLI.

import MobileFaceNet -> align LFW -> train the 10 cross-fold uncertainty heads (each on the people outside its
fold, stopped on held-out training people) -> export each fold's PFE model (backbone + head) to ONNX fp32 and
fp16 with a parity check -> run PyTorch, ONNX fp32 and ONNX fp16 on every pair image and its mirror image
(fold k's images through fold k's model only) -> verify by cosine, MLS, and cosine with flip + mean
subtraction, 10-fold -> latency of the exported model at batch 1 and 32. Rerunning resumes.
"""

from __future__ import annotations

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
RUNS = {"pytorch": ("torch", None), "onnx_fp32": ("ort", False), "onnx_fp16": ("ort", True)}


def _fold_model(out: Path, key: str, fold: int, parity: Path):
    """The backend that runs fold ``fold``'s PFE model for run ``key`` (exporting it on first use)."""
    from faceembed.export.parity_inputs import export_checkpoint
    from faceembed.inference.backends import load_backend

    ckpt = out / "pfe" / "heads" / f"fold_{fold:02d}.pt"
    backend, fp16 = RUNS[key]
    if backend == "torch":
        return load_backend(ckpt, "torch")
    onnx_path = out / "onnx" / f"pfe_fold_{fold:02d}_{'fp16' if fp16 else 'fp32'}.onnx"
    if not onnx_path.exists():
        export_checkpoint(ckpt, onnx_path, fp16=fp16, parity_input=parity)
    return load_backend(onnx_path, "ort")


def run_lfw_demo(out: str | Path, json_path: str | Path | None = None, data: str | Path | None = None,
                 quick: bool = False, progress: bool = True, backbone: str | None = None) -> dict[str, Any]:
    """Run the PFE pipeline on LFW View 2 (6,000 pairs, 10 folds) and print the results table. ``backbone``: a
    model name or file with a card and a feature map (default: the shared MobileFaceNet checkpoint)."""
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
    x, x_flip = face_tensors(faces, card), face_tensors(faces, card, flip=True)
    parity = out / "parity_faces.npy"
    if not parity.exists():
        out.mkdir(parents=True, exist_ok=True)
        np.save(parity, x[:32])
    row = {n: i for i, n in enumerate(names)}
    fold_rows = [np.unique([row[r] for p in pairs if p.fold == k for r in (p.relpath1, p.relpath2)])
                 for k in range(10)]

    result: dict[str, Any] = {"pairs": len(pairs), "folds": 10, "cosine": {}, "mls": {},
                              "cosine_flip_meansub": {}, "auc": {}, "tar_at_far_1e-3": {}}
    for key in RUNS:
        step(f"{key}: run every fold's model on its pair images and their mirror images")
        dim = None
        mu = sig = mu_flip = None
        for k in range(10):
            backend = _fold_model(out, key, k, parity)
            rows = fold_rows[k]
            m, s = run_batched(backend, x[rows])
            mf, _ = run_batched(backend, x_flip[rows])
            if dim is None:
                dim = m.shape[1]
                mu, sig, mu_flip = (np.zeros((len(names), dim), np.float32) for _ in range(3))
            mu[rows], sig[rows], mu_flip[rows] = m, s, mf
        feats = dict(zip(names, mu, strict=True))
        sigmas = dict(zip(names, sig, strict=True))
        flips = dict(zip(names, mu_flip, strict=True))
        cos = verify_features(pairs, feats, metric="cosine", flip_mode=None)
        mls = calibrated_mls(pairs, verify_features(pairs, feats, sigma_sq=sigmas, metric="mls", flip_mode=None),
                             torch_results["folds"])
        fms = verify_features(pairs, feats, metric="cosine", flip_features=flips, flip_mode="concat",
                              mean_subtract=True)
        result["cosine"][key], result["mls"][key] = cos.accuracy, mls.accuracy
        result["cosine_flip_meansub"][key] = fms.accuracy
        result["auc"][key] = {"cosine": cos.auc, "mls": mls.auc}
        result["tar_at_far_1e-3"][key] = {"cosine": cos.tar_at_far.get("0.001"), "mls": mls.tar_at_far.get("0.001")}

    step("latency of the exported PFE model (ONNX Runtime fp32)")
    result["latency_ms_per_image"] = {
        "onnx_fp32": latency_per_image(_fold_model(out, "onnx_fp32", 0, parity), x[:32], (1, 32))}
    result["pfe_training"] = {"cosine": torch_results["cosine"], "mls": torch_results["mls"],
                              "timing_s": torch_results.get("timing_s")}
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["step_seconds"] = step.stop()
    _lfw_table(result)
    if json_path:
        write_json(json_path, result)
    console.print(f"done in {result['seconds']:.0f} s")
    return result


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
    table = Table(title=f"PFE (MobileFaceNet + uncertainty head) on LFW, {result['pairs']} pairs, 10-fold")
    for col in ("model", "cosine", "MLS", "cosine flip + mean-sub", "ms/image b1", "ms/image b32"):
        table.add_column(col, justify="right" if col != "model" else "left")
    lat = result.get("latency_ms_per_image", {})
    for key in RUNS:
        lk = lat.get(key, {})
        table.add_row(key, f"{result['cosine'][key]:.4f}", f"{result['mls'][key]:.4f}",
                      f"{result['cosine_flip_meansub'][key]:.4f}",
                      f"{lk['1']:.2f}" if "1" in lk else "", f"{lk['32']:.2f}" if "32" in lk else "")
    Console().print(table)
