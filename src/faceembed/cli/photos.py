"""Photo commands: detect faces and landmarks (MTCNN), enroll people, identify faces (1:N), evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import (
    DEFAULT_MODEL,
    Address,
    Detector,
    Engine,
    FaceModelOption,
    NoFace,
    NumWorkers,
    Overwrite,
    Progress,
    app,
    check_choices,
    print_json,
)
from faceembed.errors import FaceembedError

PANEL = "Photos: detect and identify"

Workers = Annotated[int | None, typer.Option(help="Processes (default: all cores).")]
OnError = Annotated[str, typer.Option(help="skip (bad images / no face: one line each, listed in a skip list) | stop.")]
Keep = Annotated[str, typer.Option(help="Several faces in a photo: keep the largest | the one nearest the center.")]
MinFace = Annotated[float, typer.Option(help="Smallest face to find, pixels (P-Net pyramid starts there, or at "
                                             "--min-face-fraction of the shorter side where that is larger).")]
MinFaceFraction = Annotated[float, typer.Option(help="Smallest face to find as a share of the photo's shorter side, "
                                                     "where larger than --min-face-size (1/16: large photos skip "
                                                     "their costliest pyramid levels; 0: off).")]
#: faceembed.faces.nms.MIN_FACE_FRACTION (a literal: the CLI's start-up imports no numpy; a test keeps them equal)
MIN_FACE_FRACTION = 0.0625
StoreUrl = Annotated[str | None, typer.Option("--db", help="A store (sqlite:///path.db | postgresql://...) "
                                                          "instead of a gallery file; with --collection.")]
CollectionName = Annotated[str | None, typer.Option(help="A collection of --db (faceembed collection create).")]
MinQuality = Annotated[float | None, typer.Option(help="PFE models with a quality reference in their card: set "
                                                       "aside faces of quality below Q, 0..1 (0.5 = the median "
                                                       "validation face; see 'faceembed card', quality).")]


def _check_photo_options(keep: str, on_error: str | None = None, detector: str | None = None,
                         no_face: str | None = None, face_size: tuple[float, float] | None = None) -> None:
    """Refuse bad choices, and a bad ``(min_face_size, min_face_fraction)``, before any work."""
    check_choices(("keep", keep, ("largest", "center")), ("on-error", on_error, ("skip", "stop")),
                  ("detector", detector, ("mtcnn", "none")), ("no-face", no_face, ("skip", "whole")))
    if face_size is not None:
        from faceembed.faces.detect import check_face_size

        check_face_size(*face_size)


def _echo_failures(failed: list[tuple[str, str]], limit: int = 50) -> None:
    for _, reason in failed[:limit]:
        typer.echo(f"faceembed: skipped: {reason}", err=True)
    if len(failed) > limit:
        typer.echo(f"faceembed: ... and {len(failed) - limit} more (see the skip list)", err=True)


@app.command(rich_help_panel=PANEL)
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image folder (searched recursively) or image files.")],
    out: Annotated[Path, typer.Option(help="Landmark file to write (read by 'faceembed align --landmarks').")],
    keep: Keep = "largest",
    on_error: OnError = "skip",
    min_face_size: MinFace = 40.0,
    min_face_fraction: MinFaceFraction = MIN_FACE_FRACTION,
    fmt: Annotated[str, typer.Option("--format", help="xxyy (x1..x5 y1..y5) | interleaved (TAB).")] = "xxyy",
    backend: Annotated[str, typer.Option(help="MTCNN runtime: auto (ort+openvino where OpenVINO is installed, "
                                              "else ort) | ort+openvino (P-Net on ONNX Runtime, R-/O-Net on "
                                              "OpenVINO) | openvino | ort | torch; the same faces within float "
                                              "noise. The summary names the one that ran.")] = "auto",
    checkpoint: Annotated[Path | None, typer.Option(help="MTCNN checkpoint (default: converted once from the "
                                                          "'mtcnn' package into the cache).")] = None,
    reference: Annotated[Path | None, typer.Option(help="Landmark file to compare with (e.g. LFW's "
                                                        "ldmark_lfw_mtcnncaffe.txt): distance / inter-ocular.")] = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    progress: Progress = True,
) -> None:
    """Find faces (MTCNN) and 5 landmarks; write OUT, OUT.json (boxes, scores) and OUT.skipped.txt. A killed run
    resumes: finished chunks are kept in OUT.parts/ until OUT is written."""
    from faceembed.faces.detect import DETECT_BACKENDS
    from faceembed.faces.people import detect_photos

    _check_photo_options(keep, on_error, face_size=(min_face_size, min_face_fraction))
    check_choices(("format", fmt, ("xxyy", "interleaved")), ("backend", backend, DETECT_BACKENDS))
    summary, failed = detect_photos(images, out, keep, on_error, min_face_size, fmt, backend, checkpoint, reference,
                                    workers, overwrite, progress, min_face_fraction)
    _echo_failures(failed)
    print_json(summary)


@app.command(rich_help_panel=PANEL)
def enroll(
    images: Annotated[Path, typer.Option(help="One folder per person: DIR/Name/photo.jpg.")],
    out: Annotated[Path | None, typer.Option(help="Gallery file (.npz) to write (or --db and --collection).")] = None,
    model: FaceModelOption = DEFAULT_MODEL,
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default: detect with MTCNN).")] = None,
    keep: Keep = "largest",
    on_error: OnError = "skip",
    min_face_size: MinFace = 40.0,
    min_face_fraction: MinFaceFraction = MIN_FACE_FRACTION,
    detector: Detector = "mtcnn",
    no_face: NoFace = "skip",
    min_quality: MinQuality = None,
    workers: Workers = None,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    db: StoreUrl = None,
    collection: CollectionName = None,
    progress: Progress = True,
) -> None:
    """Enroll every person folder: detect, align, embed; template = mean of unit embeddings (PFE: fused).
    --min-quality sets aside low-quality faces (listed in OUT.skipped.txt)."""
    from faceembed.engines import Engine
    from faceembed.faces.people import enroll_folder
    from faceembed.faces.quality import check_quality_value

    _check_photo_options(keep, on_error, detector, no_face, (min_face_size, min_face_fraction))
    check_quality_value(min_quality)
    from faceembed.faces.collection_folders import enroll_folder_into_collection, need_target

    if db is not None or collection is not None:
        summary = enroll_folder_into_collection(images, db, collection, None if model == DEFAULT_MODEL else model,
                                                min_quality, detector, no_face, progress, min_face_size, out=out,
                                                min_face_fraction=min_face_fraction)
        _echo_failures(summary.pop("skipped"))
        _echo_set_aside(summary.get("set_aside", []))
        return print_json(summary)
    need_target("--out", out)
    summary = enroll_folder(images, model, out, landmarks, workers, Engine(engine, address, num_workers),
                            min_quality, keep=keep, on_error=on_error, min_face_size=min_face_size,
                            min_face_fraction=min_face_fraction, progress=progress, detector=detector, no_face=no_face)
    _echo_failures(summary.pop("skipped"))
    _echo_set_aside(summary.get("set_aside", []))
    print_json(summary)


def _echo_set_aside(aside: list[dict], limit: int = 50) -> None:
    for item in aside[:limit]:
        typer.echo(f"faceembed: set aside: {item['image']}: {item['reason']}", err=True)
    if len(aside) > limit:
        typer.echo(f"faceembed: ... and {len(aside) - limit} more set aside", err=True)


@app.command(rich_help_panel=PANEL)
def identify(
    images: Annotated[list[Path], typer.Option(help="Probe image folder or files (repeatable).")],
    gallery: Annotated[Path | None, typer.Option(help="Gallery from 'faceembed enroll' (or --db and "
                                                      "--collection).")] = None,
    model: Annotated[Path | None, typer.Option(help="Face model (default: the one the gallery was made with).")] = None,
    top_k: Annotated[int, typer.Option(help="Names to list per photo.")] = 5,
    threshold: Annotated[float | None, typer.Option(help="Score (of --metric) below which the answer is "
                                                         "'unknown'.")] = None,
    metric: Annotated[str, typer.Option(help="cosine | mls (mutual likelihood score: a gallery enrolled with a "
                                             "PFE model, probes through one).")] = "cosine",
    method: Annotated[str, typer.Option(help="auto | numpy | faiss (exact search either way; cosine).")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the answers as JSON.")] = None,
    keep: Keep = "largest",
    min_face_size: MinFace = 40.0,
    min_face_fraction: MinFaceFraction = MIN_FACE_FRACTION,
    detector: Detector = "mtcnn",
    no_face: NoFace = "skip",
    min_quality: MinQuality = None,
    workers: Workers = None,
    db: StoreUrl = None,
    collection: CollectionName = None,
    progress: Progress = False,
) -> None:
    """Name the person in each photo: top-k gallery people with cosine (or MLS) scores ('unknown' below
    --threshold); PFE models also give each photo's face quality."""
    from faceembed.faces.people import identify_photos
    from faceembed.faces.quality import check_quality_value

    _check_photo_options(keep, None, detector, no_face, (min_face_size, min_face_fraction))
    check_choices(("method", method, ("auto", "numpy", "faiss")), ("metric", metric, ("cosine", "mls")))
    check_quality_value(min_quality)
    from faceembed.faces.collection_folders import identify_photos_in_collection, need_target

    if db is not None or collection is not None:
        result = identify_photos_in_collection(db, collection, images, model, top_k, threshold, json_out, detector,
                                               no_face, min_face_size, gallery=gallery,
                                               min_face_fraction=min_face_fraction)
    else:
        need_target("--gallery", gallery)
        result = identify_photos(gallery, images, model, top_k, threshold, method, workers, json_out, metric,
                                 min_quality, keep=keep, min_face_size=min_face_size,
                                 min_face_fraction=min_face_fraction, progress=progress,
                                 detector=detector, no_face=no_face)
    _echo_failures([(f["image"], f["reason"]) for f in result["failed"]])
    _echo_set_aside(result["set_aside"])
    probes = result.get("probes", {})
    for r, hits in result["answers"].items():
        q = probes.get(r, {}).get("quality")
        typer.echo(f"{r}\t" + "  ".join(f"{h['name']} {h['score']:.3f}" for h in hits)
                   + ("" if q is None else f"\tquality {q:.2f}"))


@app.command("evaluate-identification", rich_help_panel=PANEL)
def evaluate_identification(
    images: Annotated[Path, typer.Argument(help="One folder per person (e.g. LFW images/).")],
    model: FaceModelOption = DEFAULT_MODEL,
    min_images: Annotated[int, typer.Option(help="Use people with at least this many images.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the gallery/probe split and of the impostor people.")] = 0,
    gallery_fraction: Annotated[float, typer.Option(help="Share of each person's images enrolled.")] = 0.5,
    impostor_fraction: Annotated[float, typer.Option(help="Share of people held out as impostors (open set).")] = 0.2,
    far: Annotated[float, typer.Option(help="False alarm rate for the open-set DIR.")] = 1e-2,
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default: detect with MTCNN).")] = None,
    plot: Annotated[Path | None, typer.Option(help="CMC curve PNG.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
    keep: Keep = "largest",
    min_face_size: MinFace = 40.0,
    min_face_fraction: MinFaceFraction = MIN_FACE_FRACTION,
    detector: Detector = "mtcnn",
    no_face: NoFace = "skip",
    workers: Workers = None,
    progress: Progress = True,
) -> None:
    """Rank-1 / rank-5 / CMC (closed set) and DIR at FAR (open set) on a seeded gallery/probe split; PFE models:
    for cosine and for MLS."""
    from faceembed.faces.people import evaluate_identification_folder

    _check_photo_options(keep, None, detector, no_face, (min_face_size, min_face_fraction))
    result = evaluate_identification_folder(images, model, min_images, seed, gallery_fraction, impostor_fraction,
                                            far, landmarks, plot, json_out, workers, keep=keep,
                                            min_face_size=min_face_size, min_face_fraction=min_face_fraction,
                                            progress=progress, detector=detector,
                                            no_face=no_face)
    brief = {k: result[k] for k in ("people", "probes", "rank1", "rank5", "failed")}
    brief["dir_at_far"] = result.get("open_set", {}).get("dir")
    brief["numpy_vs_faiss_top1"] = result["numpy_vs_faiss"]["top1_agreement"]
    for metric, res in result.get("by_metric", {}).items():  # PFE models: cosine and MLS
        brief[metric] = {"rank1": res["rank1"], "rank5": res["rank5"], "dir_at_far": res.get("open_set", {}).get("dir")}
    print_json(brief)


@app.command(rich_help_panel=PANEL)
def compare(
    first: Annotated[Path, typer.Argument(help="A photo (any image format).")],
    second: Annotated[Path, typer.Argument(help="Another photo.")],
    model: FaceModelOption = DEFAULT_MODEL,
    far: Annotated[float, typer.Option(help="False-accept rate of the threshold (from the model's card).")] = 1e-3,
    detector: Detector = "mtcnn",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Are the faces in two photos the same person? Similarity, the threshold at --far, same or different."""
    from faceembed.faces.analyzer import FaceAnalyzer
    from faceembed.files import write_json

    check_choices(("detector", detector, ("mtcnn", "none")))
    if not 0 < far < 1:
        raise FaceembedError(f"--far must be a rate between 0 and 1 (e.g. 1e-3), not {far}")
    analyzer = FaceAnalyzer(model, detector=detector)
    match = analyzer.compare(first, second, far)
    for note in match.notes:
        typer.echo(f"faceembed: note: {note}", err=True)
    typer.echo(f"{'same' if match.same else 'different'}: similarity {match.score:.4f}, threshold {match.threshold:.4f}"
               f" at FAR {far:g} ({analyzer.card.name or Path(model).name}, {analyzer.card.thresholds.dataset})")
    if match.uncertainty is not None:  # PFE models: each face's uncertainty, and quality where the card has u_ref
        u = f"uncertainty {', '.join(f'{v:.4g}' for v in match.uncertainty)}"
        if None in match.quality:
            typer.echo(f"faces: {u} (the card has no quality reference)")
        else:
            typer.echo(f"faces: quality {', '.join(f'{v:.2f}' for v in match.quality)}; {u}")
    if json_out:
        write_json(json_out, {"first": str(first), "second": str(second), "model": str(model), **match.to_dict()})
