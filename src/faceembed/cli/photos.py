"""Photo commands: detect faces and landmarks (MTCNN), enroll people, identify faces (1:N), evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceembed.cli._app import Address, Engine, NumWorkers, Progress, app, print_json
from faceembed.errors import FaceembedError, MissingInputError

PANEL = "Photos: detect and identify"

Workers = Annotated[int | None, typer.Option(help="Processes (default: all cores).")]
OnError = Annotated[str, typer.Option(help="skip (bad images / no face: one line each, listed in a skip list) | stop.")]
Keep = Annotated[str, typer.Option(help="Several faces in a photo: keep the largest | the one nearest the center.")]
MinFace = Annotated[float, typer.Option(help="Smallest face to find, pixels (P-Net pyramid starts there).")]


def _expand(paths: list[Path]) -> tuple[Path | None, list[str]]:
    """One folder -> (folder, its images relative to it); otherwise (None, files and folders' images)."""
    from faceembed.data.images import list_images

    if len(paths) == 1 and paths[0].is_dir():
        return paths[0], list_images(paths[0])
    out: list[str] = []
    for p in paths:
        if p.is_dir():
            out += [str(p / r) for r in list_images(p)]
        elif p.exists():
            out.append(str(p))
        else:
            raise MissingInputError("image not found", p)
    return None, out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FaceembedError(f"--{name} must be one of {', '.join(choices)}, not {value!r}")


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
    fmt: Annotated[str, typer.Option("--format", help="xxyy (x1..x5 y1..y5) | interleaved (TAB).")] = "xxyy",
    backend: Annotated[str, typer.Option(help="ort | torch (same results; ort is faster).")] = "ort",
    checkpoint: Annotated[Path | None, typer.Option(help="MTCNN checkpoint (default: converted once from the "
                                                          "'mtcnn' package into the cache).")] = None,
    reference: Annotated[Path | None, typer.Option(help="Landmark file to compare with (e.g. LFW's "
                                                        "ldmark_lfw_mtcnncaffe.txt): distance / inter-ocular.")] = None,
    workers: Workers = None,
    progress: Progress = True,
) -> None:
    """Find faces (MTCNN) and 5 landmarks; write OUT, OUT.json (boxes, scores) and OUT.skipped.txt."""
    from faceembed.runtime.detect import DetectorConfig
    from faceembed.runtime.detect_files import detect_files, write_detections

    _check_choice("keep", keep, ("largest", "center"))
    _check_choice("on-error", on_error, ("skip", "stop"))
    _check_choice("format", fmt, ("xxyy", "interleaved"))
    root, rels = _expand(images)
    result = detect_files(root, rels, DetectorConfig(min_face_size=min_face_size), checkpoint, backend, workers,
                          keep, on_error, progress)  # type: ignore[arg-type]
    _echo_failures(result.failed)
    summary = write_detections(out, result, fmt)
    if reference is not None:
        from faceembed.data.lfw import read_landmarks
        from faceembed.runtime.detect_files import compare_to_reference

        summary["reference"] = compare_to_reference(result.landmarks, read_landmarks(reference), rels)
    print_json(summary)


def _identity_images(folder: Path, min_images: int = 1) -> tuple[list[str], list[str]]:
    """Relative image paths and person names of a one-folder-per-person tree (people with >= min_images)."""
    from collections import Counter

    from faceembed.data.images import list_identity_folder

    items = list_identity_folder(folder)
    counts = Counter(name for _, name in items)
    items = [(r, n) for r, n in items if counts[n] >= min_images]
    if not items:
        raise FaceembedError(f"no person folder with >= {min_images} images", folder)
    return [r for r, _ in items], [n for _, n in items]


def _embed(root, rels, model, landmarks, workers, keep, on_error, progress, min_face_size, engine="local",
           address=None, num_workers=None):
    from faceembed.data.lfw import read_landmarks
    from faceembed.runtime.embed import FaceModel, embed_images

    marks = read_landmarks(landmarks) if landmarks is not None else None
    if engine == "ray":
        from faceembed.runtime.ray_embed import embed_images_ray

        res = embed_images_ray(root, rels, model, marks, num_workers, keep, on_error, min_face_size=min_face_size,
                               address=address)
    else:
        res = embed_images(root, rels, FaceModel.load(model), marks, workers, keep, on_error, progress,
                           min_face_size=min_face_size)
    _echo_failures(res.failed)
    return res


@app.command(rich_help_panel=PANEL)
def enroll(
    images: Annotated[Path, typer.Option(help="One folder per person: DIR/Name/photo.jpg.")],
    model: Annotated[Path, typer.Option(help="Face model: faceembed checkpoint (.pt) or exported .onnx.")],
    out: Annotated[Path, typer.Option(help="Gallery file (.npz) to write.")],
    landmarks: Annotated[Path | None, typer.Option(help="Landmark file (default: detect with MTCNN).")] = None,
    keep: Keep = "largest",
    on_error: OnError = "skip",
    min_face_size: MinFace = 40.0,
    workers: Workers = None,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    progress: Progress = True,
) -> None:
    """Enroll every person folder: detect, align, embed; template = mean of unit embeddings (PFE: fused)."""
    from faceembed.evaluation.identification import build_gallery, save_gallery
    from faceembed.files import write_text
    from faceembed.runtime.ray_engine import check_engine

    _check_choice("on-error", on_error, ("skip", "stop"))
    check_engine(engine, address, num_workers)
    rels, people = _identity_images(images)
    res = _embed(images, rels, model, landmarks, workers, keep, on_error, progress, min_face_size, engine, address,
                 num_workers)
    if not res.relpaths:
        raise FaceembedError("no face could be embedded", images)
    label = dict(zip(rels, people, strict=True))
    gal = build_gallery(res.embeddings, [label[r] for r in res.relpaths], res.sigma_sq,
                        meta={"model": str(model), "images": str(images), "enrolled_images": len(res.relpaths)})
    save_gallery(out, gal)
    if res.failed:
        write_text(out.with_name(out.stem + ".skipped.txt"), "".join(f"{r}\t{w}\n" for r, w in res.failed))
    print_json({"people": len(gal), "images": len(res.relpaths), "failed": len(res.failed),
                "dim": int(gal.templates.shape[1]), "pfe_fusion": gal.sigma_sq is not None, "gallery": str(out),
                "seconds": {k: round(v, 2) for k, v in res.seconds.items()}})


@app.command(rich_help_panel=PANEL)
def identify(
    gallery: Annotated[Path, typer.Option(help="Gallery from 'faceembed enroll'.")],
    images: Annotated[list[Path], typer.Option(help="Probe image folder or files (repeatable).")],
    model: Annotated[Path | None, typer.Option(help="Face model (default: the one the gallery was made with).")] = None,
    top_k: Annotated[int, typer.Option(help="Names to list per photo.")] = 5,
    threshold: Annotated[float | None, typer.Option(help="Cosine below which the answer is 'unknown'.")] = None,
    method: Annotated[str, typer.Option(help="auto | numpy | faiss (exact search either way).")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the answers as JSON.")] = None,
    keep: Keep = "largest",
    min_face_size: MinFace = 40.0,
    workers: Workers = None,
    progress: Progress = False,
) -> None:
    """Name the person in each photo: top-k gallery people with cosine scores ('unknown' below --threshold)."""
    from faceembed.evaluation.identification import identify as run_identify
    from faceembed.evaluation.identification import load_gallery
    from faceembed.files import write_json

    _check_choice("method", method, ("auto", "numpy", "faiss"))
    gal = load_gallery(gallery)
    model = model or Path(gal.meta.get("model", ""))
    if not str(model) or not model.is_file():
        raise MissingInputError("face model not found (give --model)", model)
    root, rels = _expand(images)
    res = _embed(root, rels, model, None, workers, keep, "skip", progress, min_face_size)
    answers = run_identify(gal, res.embeddings, top_k, threshold, method) if res.relpaths else []
    rows = {r: [{"name": n, "score": round(s, 4)} for n, s in hits] for r, hits in zip(res.relpaths, answers,
                                                                                       strict=True)}
    for r, hits in rows.items():
        typer.echo(f"{r}\t" + "  ".join(f"{h['name']} {h['score']:.3f}" for h in hits))
    if json_out:
        write_json(json_out, {"gallery": str(gallery), "threshold": threshold, "answers": rows,
                              "failed": [{"image": r, "reason": w} for r, w in res.failed]})


@app.command("evaluate-identification", rich_help_panel=PANEL)
def evaluate_identification(
    images: Annotated[Path, typer.Argument(help="One folder per person (e.g. LFW images/).")],
    model: Annotated[Path, typer.Option(help="Face model: faceembed checkpoint (.pt) or exported .onnx.")],
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
    workers: Workers = None,
    progress: Progress = True,
) -> None:
    """Rank-1 / rank-5 / CMC (closed set) and DIR at FAR (open set) on a seeded gallery/probe split."""
    from faceembed.evaluation.identification import evaluate_identification as run_eval
    from faceembed.files import write_json

    rels, people = _identity_images(images, min_images)
    res = _embed(images, rels, model, landmarks, workers, keep, "skip", progress, min_face_size)
    label = dict(zip(rels, people, strict=True))
    result = run_eval(res.embeddings, [label[r] for r in res.relpaths], seed, gallery_fraction, min_images,
                      impostor_fraction, far, sigma_sq=res.sigma_sq, compare_faiss=True)
    result.update({"images": len(rels), "embedded": len(res.relpaths), "failed": len(res.failed),
                   "seconds": {k: round(v, 2) for k, v in res.seconds.items()}, "model": str(model)})
    if plot:
        from faceembed.report.identification import plot_cmc

        plot_cmc({model.name: result["cmc"]}, plot, title=f"CMC, {result['people']} people, {result['probes']} probes")
    if json_out:
        write_json(json_out, result)
    brief = {k: result[k] for k in ("people", "probes", "rank1", "rank5", "failed")}
    brief["dir_at_far"] = result.get("open_set", {}).get("dir")
    brief["numpy_vs_faiss_top1"] = result["numpy_vs_faiss"]["top1_agreement"]
    print_json(brief)
