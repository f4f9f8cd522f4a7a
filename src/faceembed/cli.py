"""The ``faceembed`` command: parse, call one public function, print. Errors print as one line:
exit 2 for bad input, 1 for internal failures, 130 when interrupted."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from faceembed.errors import FaceembedError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, export, run offline and evaluate face-embedding models.",
)

Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command()
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
    quick: Annotated[bool, typer.Option(help="Short run (CI): about a minute.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT exactly.")] = False,
    progress: Progress = True,
) -> None:
    """Train a SphereFace-style network with A-Softmax (or another margin loss) on MNIST."""
    from dataclasses import replace

    from faceembed.training.train import TrainConfig, train_mnist

    if dataset != "mnist":
        raise FaceembedError(f"unknown dataset {dataset!r}; 'mnist' is supported")
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
    }
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    _print_json(train_mnist(config, out, resume=resume, progress=progress))


@app.command()
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
    from faceembed.export.parity_inputs import export_checkpoint

    report = export_checkpoint(checkpoint, out, fp16=fp16, parity_input=parity_input, opset=opset)
    for name, diff in report.max_abs_diff.items():
        typer.echo(
            f"{name}: max abs diff {diff:.3g} (scaled), max rel diff {report.max_rel_diff[name]:.3g}, "
            f"tolerance {report.tolerance[name]:.3g}"
        )
    typer.echo(f"wrote {out} ({report.precision}), parity OK at batch {report.batches}")


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="fp32 ONNX model.")],
    calibrate: Annotated[Path, typer.Option(help="Real inputs: a tensor folder ('tobin') or .npy (NHWC).")],
    out: Annotated[Path, typer.Option(help="int8 ONNX model to write.")],
    max_images: Annotated[int, typer.Option(help="Calibration images.")] = 256,
    method: Annotated[str, typer.Option(help="minmax | percentile | entropy")] = "minmax",
) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on real images."""
    from faceembed.export.quantize import quantize_model

    report = quantize_model(model, calibrate, out, max_images, method)
    report.pop("agreement_json", None)
    _print_json(report)


@app.command()
def bench(
    models: Annotated[str, typer.Option(help="Comma-separated: mnist, mobilefacenet, sphere20, sphere64, pfe, "
                                             "pfe-sphere64.")] = "mnist,mobilefacenet,sphere20,pfe",
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, ort, openvino.")] = "torch,ort,openvino",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, int8.")] = "fp32,bf16,int8",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    threads: Annotated[int, typer.Option(help="Threads for every backend.")] = 2,
    min_seconds: Annotated[float, typer.Option(help="Time each configuration at least this long.")] = 1.0,
    data: Annotated[Path | None, typer.Option(help="../shared/data: real LFW faces and MobileFaceNet weights.")] = None,
    work_dir: Annotated[Path, typer.Option(help="Where prepared models are kept.")] = Path("runs/bench"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Chart PNG.")] = None,
    progress: Progress = True,
) -> None:
    """Time every model x backend x precision x batch against the peers' defaults, with accuracy checked."""
    from faceembed.bench import BenchOptions, run_bench
    from faceembed.report.bench_table import print_bench

    def split(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    options = BenchOptions(split(models), split(backends), split(precision), [int(b) for b in split(batch)],
                           threads, min_seconds, work_dir=work_dir, data=data)
    print_bench(run_bench(options, json_out, plot, progress))


@app.command()
def tobin(
    dataset: Annotated[str, typer.Argument(help="mnist | lfw")],
    out: Annotated[Path, typer.Option(help="Output folder for the .bin files and manifest.json.")],
    split: Annotated[str, typer.Option(help="mnist: train | test")] = "test",
    batch_size: Annotated[int | None, typer.Option(help="Images per .bin file (mnist 32, lfw 1).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images (e.g. 5120).")] = None,
    shuffle_seed: Annotated[int | None, typer.Option(help="mnist: draw a random subset with this seed.")] = None,
    data: Annotated[Path, typer.Option(help="lfw: the LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    landmarks: Annotated[Path | None, typer.Option(help="lfw: landmark file (default lfw_landmark.txt).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="lfw: write the images of this pairs file.")] = None,
    all_images: Annotated[bool, typer.Option(help="lfw: every image, not only those in pairs.txt.")] = False,
    flip: Annotated[bool, typer.Option(help="lfw: mirror the faces (flip test-time augmentation).")] = False,
    progress: Progress = True,
) -> None:
    """Write preprocessed input tensors as raw little-endian float32 files (NHWC) plus a manifest."""
    from faceembed.data.tobin import tobin_lfw, tobin_mnist

    if dataset == "mnist":
        summary = tobin_mnist(out, split, batch_size or 32, limit, shuffle_seed)
    elif dataset == "lfw":
        summary = tobin_lfw(data, out, landmarks, batch_size or 1, pairs_only=not all_images, flip=flip,
                            limit=limit, progress=progress, pairs=pairs)
    else:
        raise FaceembedError(f"unknown dataset {dataset!r}; choose mnist or lfw")
    _print_json(vars(summary))


@app.command()
def infer(
    model: Annotated[Path, typer.Option(help="ONNX file (ort, openvino) or checkpoint (torch).")],
    input: Annotated[str, typer.Option("--input", help="Folder, or files separated by commas.")],
    output: Annotated[Path, typer.Option(help="Output folder.")],
    outfmt: Annotated[str, typer.Option(help="BIN | TXT | NPY")] = "BIN",
    batch: Annotated[int | None, typer.Option(help="Run each file in chunks of N items.")] = None,
    loop: Annotated[int, typer.Option(help="Run each file K times (timing), 1..100.")] = 1,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default: all cores).")] = None,
    provider: Annotated[str, typer.Option(help="cpu | cuda | tensorrt (ONNX Runtime).")] = "cpu",
    backend: Annotated[str, typer.Option(help="ort | openvino | torch")] = "ort",
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16 | fp16 | int8")] = None,
    on_error: Annotated[str, typer.Option(help="stop | skip (bad inputs go to skipped.txt).")] = "stop",
    progress: Progress = True,
) -> None:
    """Run a model over tensor files: one output file per input file and output, plus latency statistics."""
    from faceembed.runtime.infer import infer_files

    summary = infer_files(
        model,
        input,
        output,
        outfmt,
        batch,
        loop,
        threads,
        provider,
        backend,
        precision,
        on_error=on_error,
        progress=progress,
    )
    _print_json(summary.to_dict())
    if summary.files_failed:
        raise typer.Exit(2)


@app.command()
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


@app.command()
def demo(
    name: Annotated[str, typer.Argument(help="mnist | lfw")],
    out: Annotated[Path, typer.Option(help="Working folder.")] = Path("runs/demo"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    data: Annotated[Path | None, typer.Option(help="Data folder (lfw: ../shared/data).")] = None,
    quick: Annotated[bool, typer.Option(help="Short version for CI.")] = False,
    progress: Progress = True,
) -> None:
    """Run a whole pipeline and print one results table."""
    from faceembed import demo as demos

    if name == "mnist":
        demos.mnist_demo(out, json_out, quick=quick, progress=progress)
    elif name == "lfw":
        demos.lfw_demo(out, json_out, data=data, quick=quick, progress=progress)
    else:
        raise FaceembedError(f"unknown demo {name!r}; choose mnist or lfw")


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="Foreign checkpoint (e.g. mobilefacenet_casia_112x96.ckpt).")],
    out: Annotated[Path, typer.Option(help="faceembed checkpoint to write.")],
    arch: Annotated[str, typer.Option(help="Architecture of the weights.")] = "mobilefacenet",
) -> None:
    """Convert a foreign PyTorch checkpoint into faceembed's format (loaded strictly, weights_only)."""
    from faceembed.models.importers import import_checkpoint

    _print_json(import_checkpoint(source, out, arch))


@app.command()
def align(
    images: Annotated[Path, typer.Option(help="Image root (LFW: images/ with one folder per person).")],
    landmarks: Annotated[Path, typer.Option(help="Landmark file (either LFW format).")],
    out: Annotated[Path, typer.Option(help="Output folder: Name/Name_0001.png, contact_sheet.png.")],
    size: Annotated[str, typer.Option(help="112x96 or 112x112.")] = "112x96",
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    on_error: Annotated[str, typer.Option(help="stop | skip (bad images go to skipped.txt).")] = "stop",
    progress: Progress = True,
) -> None:
    """Align every image with a 5-point similarity transform onto the SphereFace/PFE template."""
    from faceembed.data.align import align_dataset
    from faceembed.data.images import list_images
    from faceembed.data.lfw import read_landmarks

    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise FaceembedError(f"--size must look like 112x96, not {size!r}") from None
    summary = align_dataset(images, read_landmarks(landmarks), list_images(images), out, (h, w), workers,
                            progress, on_error)
    _print_json({"aligned": summary.aligned, "fallback_center_crop": summary.fallback, "skipped": summary.skipped,
                 "failed": len(summary.failed), "seconds": round(summary.seconds, 2)})
    if summary.failed:
        raise typer.Exit(2)


@app.command()
def verify(
    pairs: Annotated[Path, typer.Option(help="pairs.txt (View 2: 10 folds) or a View 1 file.")],
    features: Annotated[Path, typer.Option(help="infer output folder (inputs from 'tobin lfw') or .npz file.")],
    metric: Annotated[str, typer.Option(help="cosine | mls")] = "cosine",
    flip_features: Annotated[Path | None, typer.Option(help="Features of the mirrored images.")] = None,
    flip_mode: Annotated[str, typer.Option(help="concat | mean")] = "concat",
    mean_subtract: Annotated[bool, typer.Option(help="Per-fold mean subtraction (mean of the 9 others).")] = False,
    roc_plot: Annotated[Path | None, typer.Option("--plot", help="ROC curve PNG.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """10-fold verification accuracy (threshold from the other 9 folds), ROC, AUC, EER, TAR at FAR."""
    from faceembed.evaluation.verification_files import verify_files

    result = verify_files(pairs, features, metric, flip_features, flip_mode, mean_subtract, roc_plot, json_out)
    typer.echo(f"{metric} accuracy {result['accuracy']:.4f} +- {result['accuracy_std']:.4f} "
               f"on {result['pairs']} pairs; AUC {result['auc']:.4f}, EER {result['eer']:.4f}")


@app.command("train-pfe")
def train_pfe(
    backbone: Annotated[Path, typer.Option(help="faceembed checkpoint of the frozen backbone ('faceembed import').")],
    out: Annotated[Path, typer.Option(help="Output folder: heads/fold_KK.pt, pfe_results.json, cache/.")],
    lfw: Annotated[Path, typer.Option(help="LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default LFW lfw_landmark.txt).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Most training steps per head.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    progress: Progress = True,
) -> None:
    """Train PFE uncertainty heads with LFW's cross-fold protocol: head k never sees fold k's people."""
    from dataclasses import replace

    from faceembed.training.train_pfe import PFETrainConfig, train_pfe_crossfold

    config = PFETrainConfig()
    given = {"max_steps": max_steps, "seed": seed}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    result = train_pfe_crossfold(backbone, lfw, landmarks or lfw / "lfw_landmark.txt", out, config, progress)
    _print_json({k: result[k] for k in ("cosine", "mls", "mls_minus_cosine", "timing_s")})



def main() -> None:
    """Console entry point: typed errors become one line on stderr."""
    try:
        app()
    except FaceembedError as exc:
        typer.echo(f"faceembed: error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("faceembed: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
