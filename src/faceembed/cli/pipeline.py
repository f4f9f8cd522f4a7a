"""Commands of the offline-inference pipeline: train, export, quantize, bench, tobin, infer, accuracy, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import (
    Address,
    Detector,
    Engine,
    NoFace,
    NumWorkers,
    Overwrite,
    Progress,
    app,
    check_choices,
    print_json,
    split_choices,
    split_ints,
)
from faceembed.errors import FaceembedError

PANEL = "Pipeline: train, export, run, evaluate"


@app.command(rich_help_panel=PANEL)
def train(
    out: Annotated[Path, typer.Option(help="Output folder: checkpoint.pt, state.pt, metrics.jsonl, PNGs.")],
    dataset: Annotated[str, typer.Option(help="Dataset: 'mnist'.")] = "mnist",
    loss: Annotated[str, typer.Option(help="asoftmax | softmax | cosface | arcface")] = "asoftmax",
    m: Annotated[float | None, typer.Option(help="Margin (A-Softmax: integer 1..4).")] = None,
    s: Annotated[float | None, typer.Option(help="Scale for cosface / arcface.")] = None,
    embedding_size: Annotated[int | None, typer.Option(help="Embedding size (2 to plot features).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    limit: Annotated[int | None, typer.Option(help="Train on the first N training images only.")] = None,
    widths: Annotated[str | None, typer.Option(help="Channels of the 3 stages, e.g. 32,64,128 (the default).")] = None,
    quick: Annotated[bool, typer.Option(help="Short run (CI): about a minute.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
    progress: Progress = True,
) -> None:
    """Train a SphereFace-style network with A-Softmax (or another margin loss) on MNIST."""
    from dataclasses import replace

    from faceembed.losses import LOSSES
    from faceembed.training.train import TrainConfig, train_mnist

    if dataset != "mnist":
        raise FaceembedError(f"unknown dataset {dataset!r}; 'mnist' is supported")
    check_choices(("loss", loss, tuple(LOSSES)))
    config = TrainConfig.quick() if quick else TrainConfig()
    given = {
        "loss": loss,
        "m": m,
        "s": s,
        "embedding_size": embedding_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "num_threads": threads,
        "limit_train": limit,
        "widths": _int_list(widths, "--widths") if widths else None,
    }
    if limit is not None and limit < 1:
        raise FaceembedError(f"--limit must be >= 1, not {limit}")
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    print_json(train_mnist(config, out, resume=resume, progress=progress))


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FaceembedError(f"{option} must be comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise FaceembedError(f"{option} must be comma-separated positive integers, not {text!r}")
    return values


@app.command(rich_help_panel=PANEL)
def export(
    checkpoint: Annotated[Path, typer.Argument(help="faceembed checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")],
    fp16: Annotated[bool, typer.Option(help="Compute in float16 (inputs and outputs stay float32).")] = False,
    parity_input: Annotated[
        Path | None,
        typer.Option(
            help="Real inputs for the parity check: a tensor folder or .npy (NHWC). Default: MNIST test images "
            "for MNIST models, LFW faces for face models."
        ),
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch) and check parity with PyTorch at batch 1, 4, 8, 16, 32."""
    from faceembed.export.export_model import export_checkpoint

    report = export_checkpoint(checkpoint, out, fp16=fp16, parity_input=parity_input, opset=opset)
    for name, diff in report.max_abs_diff.items():
        typer.echo(
            f"{name}: max abs diff {diff:.3g} (scaled), max rel diff {report.max_rel_diff[name]:.3g}, "
            f"tolerance {report.tolerance[name]:.3g}"
        )
    typer.echo(f"wrote {out} ({report.precision}), parity OK at batch {report.batches}")


@app.command(rich_help_panel=PANEL)
def quantize(
    model: Annotated[str, typer.Argument(help="fp32 ONNX model, a checkpoint (exported first to OUT.fp32.onnx) or a "
                                             "model name (faceembed models).")],
    calibrate: Annotated[Path, typer.Option(help="Real inputs: a tensor folder ('tobin') or .npy (NHWC).")],
    out: Annotated[Path, typer.Option(help="int8 ONNX model to write.")],
    max_images: Annotated[int, typer.Option(help="Calibration images.")] = 256,
    method: Annotated[str, typer.Option(
        help="ONNX Runtime calibration: minmax | percentile | entropy; or nncf: NNCF places and calibrates the "
             "quantizers, with its accuracy control aiming at --min-cosine (--scheme does not apply).")] = "minmax",
    scheme: Annotated[str, typer.Option(
        help="residual-float: int8 convolutions / matmuls, float residual paths (accurate; fast on OpenVINO) | "
             "full: every op int8 (fastest on ONNX Runtime).")] = "residual-float",
    min_cosine: Annotated[float, typer.Option(
        help="residual-float / nncf: keep the costliest layers in float until the output cosine to fp32 on "
             "held-out calibration images reaches this (0: no search).")] = 0.9995,
    progress: Progress = True,
) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on real images."""
    from faceembed.export.quantize import METHODS, SCHEMES, quantize_model

    check_choices(("method", method, (*METHODS, "nncf")), ("scheme", scheme, tuple(SCHEMES)))
    report = quantize_model(model, calibrate, out, max_images, method, scheme=scheme, min_cosine=min_cosine or None,
                            progress=progress)
    report.pop("agreement_json", None)
    print_json(report)


@app.command(rich_help_panel=PANEL)
def bench(
    models: Annotated[str, typer.Option(help="Comma-separated: mnist, mobilefacenet, sphere20, sphere64, pfe, "
                                             "pfe-sphere64, or model files (.onnx with a model card, e.g. from "
                                             "'faceembed import'; checkpoints .pt), measured beside them on inputs "
                                             "made per their card.")] = "mnist,mobilefacenet,sphere20,pfe",
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, ort, openvino.")] = "torch,ort,openvino",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, int8.")] = "fp32,bf16,int8",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    threads: Annotated[int, typer.Option(help="Threads for every backend.")] = 2,
    min_seconds: Annotated[float, typer.Option(help="Time each configuration at least this long.")] = 1.0,
    data: Annotated[Path | None, typer.Option(help="../shared/data: real LFW faces and MobileFaceNet weights.")] = None,
    work_dir: Annotated[Path, typer.Option(help="Where prepared models are kept.")] = Path("runs/bench"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Chart PNG.")] = None,
    data_path: Annotated[bool, typer.Option(help="Also time LFW align + preprocess and verify (needs --data).")] = True,
    ort_ablation: Annotated[bool, typer.Option(help="Also time each ONNX Runtime session choice alone.")] = False,
    task_accuracy: Annotated[bool, typer.Option(help="MNIST / LFW accuracy of every configuration.")] = True,
    pipeline: Annotated[bool, typer.Option(help="Instead: photos -> gallery end to end on LFW (needs --data), per "
                                                "stage, against face_recognition's pipeline.")] = False,
    photos: Annotated[int, typer.Option(help="--pipeline: how many LFW photos.")] = 1000,
    overwrite: Overwrite = False,
    progress: Progress = True,
) -> None:
    """Time every model x backend x precision x batch against the peers' defaults, with accuracy checked."""
    if pipeline:
        from faceembed.bench.pipeline import run_pipeline_bench

        if data is None:
            raise FaceembedError("--pipeline needs --data ../shared/data (LFW photos)")
        print_json(run_pipeline_bench(data, photos, threads, work_dir, json_out=json_out, plot=plot,
                                      progress=progress))
        return
    from faceembed.bench.models import bench_model_names
    from faceembed.bench.run import BenchOptions, run_bench
    from faceembed.inference.backends import BACKENDS
    from faceembed.report.bench_table import print_bench

    names = bench_model_names(models)
    options = BenchOptions(names, split_choices("backends", backends, BACKENDS),
                           split_choices("precision", precision, ("fp32", "bf16", "int8")),
                           split_ints("batch", batch), threads, min_seconds, work_dir=work_dir, data=data,
                           data_path=data_path, ort_ablation=ort_ablation, task_accuracy=task_accuracy,
                           overwrite=overwrite)
    print_bench(run_bench(options, json_out, plot, progress))


@app.command(rich_help_panel=PANEL)
def tobin(
    dataset: Annotated[str, typer.Argument(help="mnist | lfw | photos")],
    out: Annotated[Path, typer.Option(help="Output folder for the .bin files and manifest.json.")],
    split: Annotated[str, typer.Option(help="mnist: train | test")] = "test",
    batch_size: Annotated[int | None, typer.Option(help="Images per .bin file (mnist 32, lfw 1).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images (e.g. 5120).")] = None,
    shuffle_seed: Annotated[int | None, typer.Option(help="mnist: draw a random subset with this seed.")] = None,
    data: Annotated[Path | None, typer.Option(help="lfw: the LFW folder (images/, pairs.txt; default "
                                                    "../shared/data/lfw); mnist: the folder of the four IDX files "
                                                    "(default: the bundled copy).")] = None,
    landmarks: Annotated[Path | None, typer.Option(help="lfw: landmark file (default lfw_landmark.txt).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="lfw: write the images of this pairs file.")] = None,
    all_images: Annotated[bool, typer.Option(help="lfw: every image, not only those in pairs.txt.")] = False,
    flip: Annotated[bool, typer.Option(help="lfw: mirror the faces (flip test-time augmentation).")] = False,
    on_error: Annotated[str | None, typer.Option(help="lfw: stop (default) | skip; photos: skip (default) | stop "
                                                      "(bad images go to skipped.txt).")] = None,
    model: Annotated[Path | None, typer.Option(help="lfw, photos: write the input of this model (its card: size, "
                                                    "template, colour, normalisation, layout); default: 112x96 "
                                                    "SphereFace / MobileFaceNet input.")] = None,
    images: Annotated[Path | None, typer.Option(help="photos: the photo folder (any format, found by "
                                                     "content).")] = None,
    detector: Detector = "mtcnn",
    no_face: NoFace = "skip",
    keep: Annotated[str, typer.Option(help="photos: several faces in a photo: largest | center.")] = "largest",
    progress: Progress = True,
) -> None:
    """Write preprocessed input tensors as raw little-endian float32 files (the model card's layout, NHWC by
    default) plus a manifest.

    Rerun the same command after an interruption: complete batch files are kept, the rest written."""
    from faceembed.batch.tobin import tobin_dataset

    check_choices(("split", split, ("train", "test")), ("on-error", on_error, ("stop", "skip")),
                  ("detector", detector, ("mtcnn", "none")), ("no-face", no_face, ("skip", "whole")),
                  ("keep", keep, ("largest", "center")))
    summary = tobin_dataset(dataset, out, split=split, batch_size=batch_size, limit=limit, shuffle_seed=shuffle_seed,
                            data=data, landmarks=landmarks, pairs=pairs, all_images=all_images, flip=flip,
                            on_error=on_error, model=model, images=images, detector=detector, no_face=no_face,
                            keep=keep, progress=progress)
    print_json(summary.to_dict())


@app.command(rich_help_panel=PANEL)
def infer(
    model: Annotated[str, typer.Option(help="A model name (faceembed models), an ONNX file (ort, openvino) or a "
                                            "checkpoint (torch).")],
    input: Annotated[str, typer.Option("--input", help="Folder, or files separated by commas.")],
    output: Annotated[Path, typer.Option(help="Output folder.")],
    outfmt: Annotated[str, typer.Option(help="BIN | TXT | NPY")] = "BIN",
    batch: Annotated[int | None, typer.Option(help="Run each file in chunks of N items.")] = None,
    loop: Annotated[int, typer.Option(help="Run each file K times (timing), 1..100.")] = 1,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default: all cores).")] = None,
    provider: Annotated[str, typer.Option(help="cpu | cuda | tensorrt (ONNX Runtime).")] = "cpu",
    backend: Annotated[str | None, typer.Option(help="ort | openvino | torch | auto (fastest accurate, cached); "
                                                     "default: torch for a checkpoint, ort for ONNX.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16 | fp16 | int8")] = None,
    on_error: Annotated[str, typer.Option(help="stop | skip (bad inputs go to skipped.txt).")] = "stop",
    overwrite: Overwrite = False,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    progress: Progress = True,
) -> None:
    """Run a model over tensor files: one output file per input file and output, plus latency statistics."""
    from faceembed.engines import Engine
    from faceembed.inference.backends import BACKENDS, PRECISIONS, PROVIDERS

    outfmt = outfmt.upper() if outfmt.upper() in ("BIN", "TXT", "NPY") else outfmt
    check_choices(("outfmt", outfmt, ("BIN", "TXT", "NPY")),
                  ("on-error", on_error, ("stop", "skip")),
                  ("backend", backend, (*BACKENDS, "auto")), ("precision", precision, PRECISIONS),
                  ("provider", provider, tuple(PROVIDERS)))
    summary = Engine(engine, address, num_workers).infer(
        model, input, output, outfmt=outfmt, batch=batch, loop=loop, threads=threads, provider=provider,
        backend=backend, precision=precision, on_error=on_error, progress=progress, overwrite=overwrite)
    print_json(summary.to_dict())
    if summary.files_failed:
        raise typer.Exit(2)


@app.command(rich_help_panel=PANEL)
def accuracy(
    labels: Annotated[Path, typer.Option(help="Folder of {i}_label.txt files.")],
    predictions: Annotated[Path, typer.Option(help="Folder of {i}_..._output_K files.")],
    output_index: Annotated[int, typer.Option(help="Which model output holds the logits.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Confusion-matrix PNG.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Top-1 accuracy, per-class accuracy and confusion matrix from label and prediction folders."""
    from faceembed.evaluation.classification import accuracy_from_folders
    from faceembed.files import write_json

    result = accuracy_from_folders(labels, predictions, output_index)
    if plot:
        import numpy as np

        from faceembed.report.plots import plot_confusion_matrix

        cm = np.asarray(result.confusion)
        plot_confusion_matrix(cm, [str(i) for i in range(len(cm))], plot)
    if json_out:
        write_json(json_out, result.to_dict())
    typer.echo(f"accuracy {result.accuracy:.4f} on {result.images} images in {result.files} files")


@app.command(rich_help_panel=PANEL)
def demo(
    name: Annotated[str, typer.Argument(help="mnist | lfw | photos")],
    out: Annotated[Path, typer.Option(help="Working folder.")] = Path("runs/demo"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data folder (lfw, photos: ../shared/data).")] = None,
    quick: Annotated[bool, typer.Option(help="Short version for CI.")] = False,
    backbone: Annotated[str | None, typer.Option(help="lfw: the PFE backbone, a model name or file with a card "
                                                      "(e.g. dlib-resnet; default: the shared MobileFaceNet).")] = None,
    detections: Annotated[Path | None, typer.Option(help="lfw: 'faceembed detect' OUT.json of the LFW images: "
                                                         "also reject pairs by detector score.")] = None,
    progress: Progress = True,
) -> None:
    """Run a whole pipeline and print one results table."""
    from faceembed.demo import run_demo

    run_demo(name, out, json_out, data=data, quick=quick, progress=progress, backbone=backbone,
             detections=detections)
