"""Face commands: import a backbone, align, verify, train PFE heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import Address, Engine, NumWorkers, Overwrite, Progress, app, parse_size, print_json

PANEL = "Faces: LFW and PFE"


@app.command("import", rich_help_panel=PANEL)
def import_(
    source: Annotated[Path, typer.Argument(help="Foreign checkpoint (e.g. mobilefacenet_casia_112x96.ckpt).")],
    out: Annotated[Path, typer.Option(help="faceembed checkpoint to write.")],
    arch: Annotated[str, typer.Option(help="Architecture of the weights.")] = "mobilefacenet",
) -> None:
    """Convert a foreign PyTorch checkpoint into faceembed's format (loaded strictly, weights_only)."""
    from faceembed.models.importers import import_checkpoint

    print_json(import_checkpoint(source, out, arch))


@app.command(rich_help_panel=PANEL)
def align(
    images: Annotated[Path, typer.Option(help="Image root (LFW: images/ with one folder per person).")],
    out: Annotated[Path, typer.Option(help="Output folder: Name/Name_0001.png, contact_sheet.png.")],
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (either LFW format); default: detect "
                                                        "with MTCNN first into OUT/landmarks.txt.")] = None,
    size: Annotated[str, typer.Option(help="112x96 or 112x112.")] = "112x96",
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    on_error: Annotated[str, typer.Option(help="stop | skip (bad images go to skipped.txt).")] = "stop",
    overwrite: Overwrite = False,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    progress: Progress = True,
) -> None:
    """Align every image with a 5-point similarity transform onto the SphereFace/PFE template."""
    from faceembed.engines import Engine
    from faceembed.faces.people import align_folder

    summary = align_folder(images, out, landmarks, workers, Engine(engine, address, num_workers),
                           size=parse_size(size), progress=progress, on_error=on_error, overwrite=overwrite)
    print_json({"aligned": summary.aligned, "fallback_center_crop": summary.fallback, "skipped": summary.skipped,
                "failed": len(summary.failed), "seconds": round(summary.seconds, 2)})
    if summary.failed:
        raise typer.Exit(2)


@app.command(rich_help_panel=PANEL)
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
    from faceembed.batch.verify import verify_files

    result = verify_files(pairs, features, metric, flip_features, flip_mode, mean_subtract, roc_plot, json_out)
    typer.echo(f"{metric} accuracy {result['accuracy']:.4f} +- {result['accuracy_std']:.4f} "
               f"on {result['pairs']} pairs; AUC {result['auc']:.4f}, EER {result['eer']:.4f}")


@app.command("train-pfe", rich_help_panel=PANEL)
def train_pfe(
    backbone: Annotated[Path, typer.Option(help="faceembed checkpoint of the frozen backbone ('faceembed import').")],
    out: Annotated[Path, typer.Option(help="Output folder: heads/fold_KK.pt, pfe_results.json, cache/.")],
    lfw: Annotated[Path, typer.Option(help="LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default LFW lfw_landmark.txt).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Most training steps per head.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    heads: Annotated[int | None, typer.Option(help="Heads per model (averaged log sigma^2).")] = None,
    flip_augment: Annotated[bool | None, typer.Option(
        "--flip-augment/--no-flip-augment", help="Train on mirror images too (their features are cached).")] = None,
    overwrite: Overwrite = False,
    progress: Progress = True,
) -> None:
    """Train PFE uncertainty heads with LFW's cross-fold protocol: head k never sees fold k's people."""
    from dataclasses import replace

    from faceembed.training.train_pfe import PFETrainConfig, train_pfe_crossfold

    config = PFETrainConfig()
    given = {"max_steps": max_steps, "seed": seed, "heads": heads, "flip_augment": flip_augment}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    result = train_pfe_crossfold(backbone, lfw, landmarks or lfw / "lfw_landmark.txt", out, config, progress,
                                 overwrite=overwrite)
    print_json({k: result[k] for k in ("cosine", "mls", "mls_minus_cosine", "timing_s")})
