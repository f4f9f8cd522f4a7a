"""Photo folders to people: enroll a gallery, identify photos against it, evaluate identification, and align
a photo folder (detecting first when no landmarks are given). The CLI and the Python API call these."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceembed.engines import LOCAL, Engine
from faceembed.errors import FaceembedError, MissingInputError
from faceembed.faces.enrollment import identity_images, landmarks_of, rows_of
from faceembed.faces.nms import MIN_FACE_FRACTION
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


def enroll_folder(images: str | Path, model: str | Path, out: str | Path, landmarks: str | Path | None = None,
                  workers: int | None = None, engine: Engine = LOCAL, min_quality: float | None = None,
                  **options: Any) -> dict[str, Any]:
    """Enroll every person folder of ``images`` (:func:`embed_people`); a person's template is the mean of their
    unit embeddings (PFE models: precision-weighted fusion). Writes the gallery ``out`` (with every enrolled
    face, so people can be added and removed later: :class:`~faceembed.faces.gallery.Gallery`) and
    ``OUT.skipped.txt`` listing photos that were not used; returns a summary.

    ``min_quality`` (PFE models whose card has a quality reference): faces of quality below it are set aside,
    not enrolled, and listed in ``set_aside`` and in ``OUT.skipped.txt`` (``quality 0.31 < 0.4``)."""
    from faceembed.faces.enrollment import embed_people
    from faceembed.faces.gallery import Gallery

    out = Path(out)
    faces = embed_people(images, model, landmarks, workers, engine, min_quality, **options)
    gallery = Gallery.of_faces(faces.people, faces.embeddings, faces.sigma_sq)
    meta = {"model": str(model), "images": str(faces.images), "enrolled_images": len(faces.relpaths)}
    if min_quality is not None:
        meta.update({"min_quality": min_quality, "set_aside": len(faces.set_aside)})
    gal = gallery.save(out, meta)
    left_out = faces.failed + [(a["image"], a["reason"]) for a in faces.set_aside]
    skipped = out.with_name(out.stem + ".skipped.txt")
    if left_out:
        write_text(skipped, "".join(f"{r}\t{w}\n" for r, w in left_out))
    elif skipped.exists():  # an earlier enrollment's list: this gallery left nothing out
        skipped.unlink()
    summary = {"people": len(gal), "images": len(faces.relpaths), "used_whole": len(faces.whole),
               "failed": len(faces.failed), "dim": int(gal.templates.shape[1]), "pfe_fusion": gal.sigma_sq is not None,
               "gallery": str(out), "embedding": faces.config,
               "seconds": {k: round(v, 2) for k, v in faces.seconds.items()},
               "skipped": faces.failed}
    if min_quality is not None:
        summary.update({"min_quality": min_quality, "set_aside": faces.set_aside})
    return summary


def _identify_model(gal: Any, model: str | Path | None) -> Path:
    """The probes' model: ``model``, else the one the gallery names (a built-in or imported name works too)."""
    from faceembed.models.registry import resolve_model

    model = Path(model) if model is not None else Path(gal.meta.get("model") or "")
    if not str(model):
        raise MissingInputError("the gallery does not name its model: give --model")
    model = resolve_model(model)
    if not model.is_file():
        raise MissingInputError("face model not found (give --model)", model)
    return model


def identify_photos(gallery: str | Path, images: Sequence[str | Path], model: str | Path | None = None,
                    top_k: int = 5, threshold: float | None = None, method: str = "auto",
                    workers: int | None = None, json_out: str | Path | None = None, metric: str = "cosine",
                    min_quality: float | None = None, **options: Any) -> dict[str, Any]:
    """Name the person in each photo: the top-k gallery people with their scores (``unknown`` below
    ``threshold``), by cosine or, with ``metric="mls"`` (a PFE gallery and model), by mutual likelihood score.
    ``model`` defaults to the one the gallery was made with. Returns ``{"answers": {photo: [{"name", "score"},
    ...]}, "failed": [...], "set_aside": [...]}`` plus, for PFE models, ``probes``: ``{photo: {"uncertainty",
    "quality"}}`` (also written to ``json_out``). ``min_quality``: probes of quality below it are not
    identified but listed in ``set_aside`` (``{"image", "quality", "reason"}``)."""
    from faceembed.evaluation.identification import METRICS, identify, load_gallery
    from faceembed.faces.quality import check_min_quality, face_report, has_sigma_sq, qualities, set_aside
    from faceembed.models.card_io import read_card

    if method not in ("auto", "numpy", "faiss"):
        raise FaceembedError(f"--method must be one of auto, numpy, faiss, not {method!r}")
    if metric not in METRICS:
        raise FaceembedError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    gal = load_gallery(gallery)
    model = _identify_model(gal, model)
    card = read_card(model)
    check_min_quality(card, min_quality, model)
    if metric == "mls" and (gal.sigma_sq is None or not has_sigma_sq(card)):
        what = "the gallery has no fused sigma_sq (enroll it with a PFE model)" if gal.sigma_sq is None else \
            f"the model {card.name or model.name} has no sigma_sq output"
        raise FaceembedError(f"--metric mls needs a PFE gallery and model: {what}")
    root, rels = expand_images(images)
    res = LOCAL.embed(root, rels, model, None, workers, **{"on_error": "skip", **options})
    kept, aside = set_aside(res.relpaths, qualities(card, res.sigma_sq), min_quality)
    rows = rows_of(res.relpaths, kept)
    sig = None if res.sigma_sq is None else res.sigma_sq[rows]
    answers = identify(gal, res.embeddings[rows], top_k, threshold, method, metric, sig) if kept else []
    rows_out = {r: [{"name": n, "score": round(s, 4)} for n, s in hits] for r, hits in zip(kept, answers, strict=True)}
    result = {"gallery": str(gallery), "embedding": res.config, "metric": metric, "threshold": threshold,
              "answers": rows_out,
              "failed": [{"image": r, "reason": w} for r, w in res.failed], "used_whole": len(res.whole),
              "min_quality": min_quality, "set_aside": aside}
    report = face_report(card, sig)
    if report is not None:
        result["probes"] = dict(zip(kept, report, strict=True))
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
    res = LOCAL.embed(images, rels, model, landmarks_of(landmarks), workers, **{"on_error": "skip", **options})
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


def detect_photos(images: Sequence[str | Path], out: str | Path, keep: str = "largest", on_error: str = "skip",
                  min_face_size: float = 40.0, fmt: str = "xxyy", backend: str = "auto",
                  checkpoint: str | Path | None = None, reference: str | Path | None = None,
                  workers: int | None = None, overwrite: bool = False, progress: bool = True,
                  min_face_fraction: float = MIN_FACE_FRACTION) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``faceembed detect``: MTCNN faces and 5 landmarks of every photo into ``out`` (``fmt`` xxyy | interleaved),
    ``OUT.json`` (boxes, scores) and ``OUT.skipped.txt``; a killed run resumes from ``OUT.parts/``. ``backend``:
    one of :data:`~faceembed.faces.detect.DETECT_BACKENDS`; the summary's ``backend`` is the one that ran
    (``auto`` resolved). The smallest face searched is ``min_face_size`` px or ``min_face_fraction`` of the shorter
    side, whichever is larger. With ``reference`` (a landmark file) also the distance to it per inter-ocular distance.
    Returns (summary, the photos left out as ``(relpath, reason)``)."""
    import shutil

    from faceembed.faces.detect import DETECT_BACKENDS, DetectorConfig, resolve_detect_backend
    from faceembed.faces.detect_files import claim_parts, detect_files, write_detections

    if backend not in DETECT_BACKENDS:
        raise FaceembedError(f"--backend must be one of {', '.join(DETECT_BACKENDS)}, not {backend!r}")
    backend = resolve_detect_backend(backend)  # a resumed run must run the same nets: the parts record this one
    root, rels = expand_images(images)
    config = DetectorConfig(min_face_size=min_face_size, min_face_fraction=min_face_fraction)
    parts = claim_parts(out, root, rels, config, keep, backend, overwrite)  # a killed run resumes from here
    result = detect_files(root, rels, config, checkpoint, backend, workers, keep, on_error,  # type: ignore[arg-type]
                          progress, parts=parts)
    summary = write_detections(out, result, fmt)
    shutil.rmtree(parts)
    if reference is not None:
        from faceembed.data.lfw import read_landmarks
        from faceembed.evaluation.landmarks import compare_to_reference

        summary["reference"] = compare_to_reference(result.landmarks, read_landmarks(reference), rels)
    return summary, result.failed


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
