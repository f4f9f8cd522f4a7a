"""Photo folders to people: enroll a gallery, identify photos against it, evaluate identification, and align
a photo folder (detecting first when no landmarks are given). The CLI and the Python API call these."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceembed.engines import LOCAL, Engine
from faceembed.errors import FaceembedError, MissingInputError
from faceembed.files import write_json, write_text


def expand_images(paths: Sequence[str | Path]) -> tuple[Path | None, list[str]]:
    """One folder -> (folder, its images relative to it); otherwise (None, the files and the folders' images)."""
    from faceembed.data.images import list_images

    paths = [Path(p) for p in paths]
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


def identity_images(folder: str | Path, min_images: int = 1) -> tuple[list[str], list[str]]:
    """Relative image paths and person names of a one-folder-per-person tree (people with >= min_images)."""
    from faceembed.data.images import list_identity_folder

    items = list_identity_folder(folder)
    counts = Counter(name for _, name in items)
    items = [(r, n) for r, n in items if counts[n] >= min_images]
    if not items:
        raise FaceembedError(f"no person folder with >= {min_images} images", folder)
    return [r for r, _ in items], [n for _, n in items]


def _landmarks(path: str | Path | None) -> dict | None:
    from faceembed.data.lfw import read_landmarks

    return read_landmarks(path) if path is not None else None


def enroll_folder(images: str | Path, model: str | Path, out: str | Path, landmarks: str | Path | None = None,
                  workers: int | None = None, engine: Engine = LOCAL, **options: Any) -> dict[str, Any]:
    """Enroll every person folder of ``images`` (``DIR/Name/photo``): detect, align, embed; a person's template
    is the mean of their unit embeddings (PFE models: precision-weighted fusion). Writes the gallery ``out``
    (and ``OUT.skipped.txt`` listing photos that were not used); returns a summary. ``options`` are
    :class:`~faceembed.faces.embed.EmbedOptions` fields."""
    from faceembed.evaluation.identification import build_gallery, save_gallery

    images, out = Path(images), Path(out)
    rels, people = identity_images(images)
    res = engine.embed(images, rels, model, _landmarks(landmarks), workers, **options)
    if not res.relpaths:
        raise FaceembedError("no face could be embedded", images)
    label = dict(zip(rels, people, strict=True))
    gal = build_gallery(res.embeddings, [label[r] for r in res.relpaths], res.sigma_sq,
                        meta={"model": str(model), "images": str(images), "enrolled_images": len(res.relpaths)})
    save_gallery(out, gal)
    skipped = out.with_name(out.stem + ".skipped.txt")
    if res.failed:
        write_text(skipped, "".join(f"{r}\t{w}\n" for r, w in res.failed))
    elif skipped.exists():  # an earlier enrollment's list: this gallery left nothing out
        skipped.unlink()
    return {"people": len(gal), "images": len(res.relpaths), "used_whole": len(res.whole), "failed": len(res.failed),
            "dim": int(gal.templates.shape[1]), "pfe_fusion": gal.sigma_sq is not None, "gallery": str(out),
            "seconds": {k: round(v, 2) for k, v in res.seconds.items()}, "skipped": res.failed}


def identify_photos(gallery: str | Path, images: Sequence[str | Path], model: str | Path | None = None,
                    top_k: int = 5, threshold: float | None = None, method: str = "auto",
                    workers: int | None = None, json_out: str | Path | None = None,
                    **options: Any) -> dict[str, Any]:
    """Name the person in each photo: the top-k gallery people with cosine scores (``unknown`` below
    ``threshold``). ``model`` defaults to the one the gallery was made with. Returns ``{"answers": {photo:
    [{"name", "score"}, ...]}, "failed": [...]}`` (also written to ``json_out``)."""
    from faceembed.evaluation.identification import identify, load_gallery

    if method not in ("auto", "numpy", "faiss"):
        raise FaceembedError(f"--method must be one of auto, numpy, faiss, not {method!r}")
    gal = load_gallery(gallery)
    from faceembed.models.registry import resolve_model

    model = Path(model) if model is not None else Path(gal.meta.get("model") or "")
    if not str(model):
        raise MissingInputError("the gallery does not name its model: give --model")
    model = resolve_model(model)  # a built-in or imported name works too
    if not model.is_file():
        raise MissingInputError("face model not found (give --model)", model)
    root, rels = expand_images(images)
    res = LOCAL.embed(root, rels, model, None, workers, **{"on_error": "skip", **options})
    answers = identify(gal, res.embeddings, top_k, threshold, method) if res.relpaths else []
    rows = {r: [{"name": n, "score": round(s, 4)} for n, s in hits]
            for r, hits in zip(res.relpaths, answers, strict=True)}
    result = {"gallery": str(gallery), "threshold": threshold, "answers": rows,
              "failed": [{"image": r, "reason": w} for r, w in res.failed], "used_whole": len(res.whole)}
    if json_out:
        write_json(json_out, result)
    return result


def evaluate_identification_folder(images: str | Path, model: str | Path, min_images: int = 10, seed: int = 0,
                                   gallery_fraction: float = 0.5, impostor_fraction: float = 0.2,
                                   far: float = 1e-2, landmarks: str | Path | None = None,
                                   plot: str | Path | None = None, json_out: str | Path | None = None,
                                   workers: int | None = None, **options: Any) -> dict[str, Any]:
    """Rank-1 / rank-5 / CMC (closed set) and DIR at FAR (open set) on a seeded gallery/probe split of a
    one-folder-per-person tree; the CMC curve to ``plot``, the whole result to ``json_out``."""
    from faceembed.evaluation.identification import evaluate_identification

    images, model = Path(images), Path(model)
    rels, people = identity_images(images, min_images)
    res = LOCAL.embed(images, rels, model, _landmarks(landmarks), workers, **{"on_error": "skip", **options})
    label = dict(zip(rels, people, strict=True))
    result = evaluate_identification(res.embeddings, [label[r] for r in res.relpaths], seed, gallery_fraction,
                                     min_images, impostor_fraction, far, sigma_sq=res.sigma_sq, compare_faiss=True)
    result.update({"images": len(rels), "embedded": len(res.relpaths), "failed": len(res.failed),
                   "seconds": {k: round(v, 2) for k, v in res.seconds.items()}, "model": str(model)})
    if plot:
        from faceembed.report.identification import plot_cmc

        plot_cmc({model.name: result["cmc"]}, plot, title=f"CMC, {result['people']} people, {result['probes']} probes")
    if json_out:
        write_json(json_out, result)
    return result


def align_folder(images: str | Path, out: str | Path, landmarks: str | Path | None = None,
                 workers: int | None = None, engine: Engine = LOCAL, **options: Any) -> Any:
    """Align every photo of ``images`` into ``out`` (:class:`~faceembed.faces.align_files.AlignOptions` fields).
    Without ``landmarks``, MTCNN detects them first into ``OUT/landmarks.txt``."""
    from faceembed.data.images import list_images
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.align_files import AlignOptions, alignment_record
    from faceembed.fingerprint import claim_folder, file_identity

    images, out = Path(images), Path(out)
    rels = list_images(images)
    if not rels:
        raise FaceembedError("no image in this folder", images)
    if landmarks is not None:
        source = {"file": file_identity(landmarks)}
    else:  # detect first, into the claimed folder: a rerun of the same reuses OUT/landmarks.txt, no other does
        from faceembed.faces.detect import DetectorConfig
        from faceembed.faces.detect_files import detect_files, write_detections

        source = {"detected": "mtcnn", "config": DetectorConfig().__dict__}
        o = AlignOptions(**options).check()
        claim_folder(out, alignment_record(images, rels, o, source), o.overwrite)
        landmarks = out / "landmarks.txt"
        if not landmarks.is_file():
            found = detect_files(images, rels, workers=workers, on_error="skip", progress=o.progress)
            write_detections(landmarks, found)
        options = {**options, "overwrite": False}  # claimed above: the folder is this run's now
    return engine.align(images, read_landmarks(landmarks), rels, out, workers, source, **options)
