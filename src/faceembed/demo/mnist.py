"""``faceembed demo mnist``: train -> export fp32 / fp16 -> tobin -> infer -> accuracy, plus ONNX latency
per batch size, through the same public functions as the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from faceembed.demo.common import console
from faceembed.demo.common import step as _step
from faceembed.files import write_json


def _predictions_in_order(pred_dir: Path, manifest: dict, index: int = 0) -> np.ndarray:
    """Class ids of every image, in the tensor folder's manifest order."""
    from faceembed.data.tensorfiles import output_name
    from faceembed.evaluation.classification import classify, read_predictions

    meta = json.loads((pred_dir / "outputs.json").read_text())["outputs"][index]
    parts = [classify(read_predictions(pred_dir / output_name(f["name"], index, "BIN"), f["count"], meta))
             for f in manifest["files"]]
    return np.concatenate(parts)


def run_mnist_demo(out: str | Path, json_path: str | Path | None = None, quick: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """``faceembed demo mnist``: the reference workflow end to end, openly. Rerunning resumes."""
    from faceembed.batch.infer import infer_files
    from faceembed.batch.tobin import tobin_mnist
    from faceembed.data.tensorfiles import read_manifest
    from faceembed.evaluation.classification import accuracy_from_folders, summarize
    from faceembed.export.export_model import export_checkpoint
    from faceembed.inference.backends import load_backend
    from faceembed.inference.timing import latency_per_image
    from faceembed.training.train import TrainConfig, train_mnist

    out = Path(out)
    config = TrainConfig.quick() if quick else TrainConfig()
    train_dir = out / "train"
    _step(f"train {config.loss} (margin {config.m or 'default'}) for {config.epochs} epochs -> {train_dir}")
    t0 = time.perf_counter()
    metrics = train_mnist(config, train_dir, resume=(train_dir / "state.pt").exists(), progress=progress)
    train_seconds = time.perf_counter() - t0
    ckpt = train_dir / "checkpoint.pt"

    models = {"onnx_fp32": out / "mnist_fp32.onnx", "onnx_fp16": out / "mnist_fp16.onnx"}
    for key, path in models.items():
        _step(f"export {path.name}")
        report = export_checkpoint(ckpt, path, fp16=key.endswith("fp16"))
        console.print(f"   parity max diff {report.max_abs_diff} (tolerance {report.tolerance})")

    bins = out / "bin_test"
    _step(f"tobin mnist test -> {bins}")
    tobin_mnist(bins, "test", batch_size=32)
    manifest = read_manifest(bins)
    truth = np.concatenate([np.loadtxt(bins / f["label"], dtype=np.int64, ndmin=1) for f in manifest["files"]])

    accuracy: dict[str, float] = {}
    accuracy_5120: dict[str, float] = {}
    torch_pred = _torch_predictions(ckpt, bins, manifest)
    accuracy["pytorch"] = summarize(truth, torch_pred).accuracy
    accuracy_5120["pytorch"] = summarize(truth[:5120], torch_pred[:5120]).accuracy
    latency: dict[str, dict[str, float]] = {}
    x32 = _first_inputs(bins, manifest, 32)
    for key, path in models.items():
        pred_dir = out / f"pred_{key}"
        _step(f"infer {path.name} -> {pred_dir}")
        infer_files(path, bins, pred_dir, outfmt="BIN", progress=progress)
        accuracy[key] = accuracy_from_folders(bins, pred_dir).accuracy
        pred = _predictions_in_order(pred_dir, manifest)
        accuracy_5120[key] = summarize(truth[:5120], pred[:5120]).accuracy
        latency[key] = latency_per_image(load_backend(path, "ort"), x32)

    result = {"test_images": int(len(truth)), "accuracy": accuracy, "accuracy_5120": accuracy_5120,
              "train_seconds": round(train_seconds, 1), "train_metrics": metrics,
              "latency_ms_per_image": latency, "train_config": vars(config)}
    _mnist_table(result)
    if json_path:
        write_json(json_path, result)
    return result


def _first_inputs(folder: Path, manifest: dict, n: int) -> np.ndarray:
    from faceembed.data.tensorfiles import read_bin

    f = manifest["files"][0]
    return read_bin(folder / f["name"], "float32", manifest["item_shape"], f["count"])[:n]


def _torch_predictions(ckpt: Path, folder: Path, manifest: dict) -> np.ndarray:
    """PyTorch eager predictions on the same tensor files the exported models read."""
    from faceembed.data.tensorfiles import read_bin
    from faceembed.evaluation.classification import classify
    from faceembed.inference.backends import load_backend

    backend = load_backend(ckpt, "torch")
    preds = [classify(backend.run(read_bin(folder / f["name"], "float32", manifest["item_shape"]))[0])
             for f in manifest["files"]]
    return np.concatenate(preds)


def _mnist_table(result: dict[str, Any]) -> None:
    table = Table(title=f"SphereFace on MNIST ({result['test_images']} test images)")
    table.add_column("model")
    table.add_column("accuracy (10,000)", justify="right")
    table.add_column("accuracy (first 5,120)", justify="right")
    for key in result["accuracy"]:
        table.add_row(key, f"{result['accuracy'][key]:.4f}", f"{result['accuracy_5120'][key]:.4f}")
    Console().print(table)
    lat = Table(title="ONNX Runtime latency, ms per image")
    lat.add_column("model")
    sizes = list(next(iter(result["latency_ms_per_image"].values())))
    for b in sizes:
        lat.add_column(f"batch {b}", justify="right")
    for key, row in result["latency_ms_per_image"].items():
        lat.add_row(key, *(f"{row[b]:.3f}" for b in sizes))
    Console().print(lat)
    Console().print(f"training took {result['train_seconds']:.0f} s")
