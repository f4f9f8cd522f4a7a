"""LFW and PFE commands: align, verify (with uncertainty rejection), train PFE heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import Address, Engine, NumWorkers, Overwrite, Progress, app, parse_size, print_json
from faceembed.errors import FaceembedError

PANEL = "LFW and PFE: align, verify, train-pfe"


@app.command(rich_help_panel=PANEL)
def align(
    images: Annotated[Path, typer.Option(help="Image root (LFW: images/ with one folder per person).")],
    out: Annotated[Path, typer.Option(help="Output folder: Name/Name_0001.png, contact_sheet.png.")],
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (either LFW format); default: detect "
                                                        "with MTCNN first into OUT/landmarks.txt.")] = None,
    size: Annotated[str | None, typer.Option(help="112x96 or 112x112 (default: the --model card's, else "
                                                  "112x96).")] = None,
    model: Annotated[Path | None, typer.Option(help="Align for this model: its card's crop size and template "
                                                    "(sphereface, arcface, dlib, none).")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    on_error: Annotated[str, typer.Option(help="stop | skip (bad images go to skipped.txt).")] = "stop",
    overwrite: Overwrite = False,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    progress: Progress = True,
) -> None:
    """Align every image with a 5-point similarity transform onto the SphereFace/PFE template (or, with
    --model, onto the template and crop size of that model's card)."""
    from faceembed.engines import Engine
    from faceembed.faces.people import align_folder

    crop, template = _align_target(size, model)
    summary = align_folder(images, out, landmarks, workers, Engine(engine, address, num_workers),
                           size=crop, template=template, progress=progress, on_error=on_error,
                           overwrite=overwrite)
    print_json({"aligned": summary.aligned, "fallback_center_crop": summary.fallback, "skipped": summary.skipped,
                "failed": len(summary.failed), "seconds": round(summary.seconds, 2)})
    if summary.failed:
        raise typer.Exit(2)


def _align_target(size: str | None, model: Path | None) -> tuple[tuple[int, int], str | None]:
    """The crop size and template of ``align``: the model card's with ``--model`` (a ``--size`` that differs
    is refused), else ``--size`` (default 112x96) with the template that size implies."""
    if model is None:
        return parse_size(size or "112x96"), None
    from faceembed.errors import FaceembedError
    from faceembed.models.card_io import read_card

    card = read_card(model)
    crop = (card.height, card.width)
    if size is not None and parse_size(size) != crop:
        raise FaceembedError(f"--size {size} contradicts the --model card's {card.height}x{card.width} crop; "
                             "leave --size out (the card decides)")
    return crop, card.template


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
    reject: Annotated[str | None, typer.Option(help="PFE models: comma-separated fractions of pairs to reject "
                                                    "(e.g. 0,0.01,0.05,0.1,0.2): the most uncertain ones, against "
                                                    "rejecting at random and by detector score.")] = None,
    detections: Annotated[Path | None, typer.Option(help="With --reject: 'faceembed detect' OUT.json, for the "
                                                         "detector-score curve.")] = None,
    reject_plot: Annotated[Path | None, typer.Option(help="With --reject: the curves as a PNG.")] = None,
) -> None:
    """10-fold verification accuracy (threshold from the other 9 folds), ROC, AUC, EER, TAR at FAR."""
    from faceembed.batch.verify import verify_files

    fractions = None
    if reject is not None:
        try:
            fractions = [float(v) for v in reject.split(",")]
        except ValueError:
            raise FaceembedError(f"--reject takes comma-separated fractions (e.g. 0,0.1), not {reject!r}") from None
    result = verify_files(pairs, features, metric, flip_features, flip_mode, mean_subtract, roc_plot, json_out,
                          fractions, detections, reject_plot)
    typer.echo(f"{metric} accuracy {result['accuracy']:.4f} +- {result['accuracy_std']:.4f} "
               f"on {result['pairs']} pairs; AUC {result['auc']:.4f}, EER {result['eer']:.4f}")
    for method, rows in result.get("rejection", {}).get("curves", {}).items():
        typer.echo(f"  reject by {method}: " + ", ".join(f"{r['fraction']:g} -> {r['accuracy']:.4f}" for r in rows))


@app.command("train-pfe", rich_help_panel=PANEL)
def train_pfe(
    backbone: Annotated[str, typer.Option(help="The frozen backbone: a model name (dlib-resnet) or a faceembed "
                                               "checkpoint ('faceembed import').")],
    out: Annotated[Path, typer.Option(help="Output folder: heads/fold_KK.pt, pfe_results.json, cache/.")],
    lfw: Annotated[Path, typer.Option(help="LFW folder (images/, pairs.txt).")] = Path("../shared/data/lfw"),
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default LFW lfw_landmark.txt).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Most training steps per head.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    heads: Annotated[int | None, typer.Option(help="Heads per model (averaged log sigma^2).")] = None,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default 2): a fixed count makes reruns "
                                                     "identical; another count is another run.")] = None,
    flip_augment: Annotated[bool | None, typer.Option(
        "--flip-augment/--no-flip-augment", help="Train on mirror images too (their features are cached).")] = None,
    overwrite: Overwrite = False,
    progress: Progress = True,
) -> None:
    """Train PFE uncertainty heads with LFW's cross-fold protocol: head k never sees fold k's people."""
    from dataclasses import replace

    from faceembed.training.train_pfe import PFETrainConfig, train_pfe_crossfold

    config = PFETrainConfig()
    given = {"max_steps": max_steps, "seed": seed, "heads": heads, "flip_augment": flip_augment, "threads": threads}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    result = train_pfe_crossfold(backbone, lfw, landmarks or lfw / "lfw_landmark.txt", out, config, progress,
                                 overwrite=overwrite)
    print_json({k: result[k] for k in ("cosine", "mls", "mls_minus_cosine", "timing_s")})
