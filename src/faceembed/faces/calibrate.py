"""``faceembed calibrate``: a model's similarity thresholds at false-accept rates, measured on LFW's View 2
images (every genuine and impostor pair among the images of ``pairs.txt``) and written into its card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceembed.evaluation.thresholds import FARS, all_pair_scores, measure_thresholds


def calibrate_model(model: str | Path, lfw_root: str | Path, pairs: str | Path | None = None,
                    landmarks: str | Path | None = None, fars: tuple[float, ...] = FARS, write: bool = True,
                    workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Embed the images of ``pairs`` (aligned from ``landmarks`` onto the model card's template), measure the
    cosine threshold at each FAR over every genuine and impostor pair among them and the accuracy-optimal one
    over the pairs file's own pairs, and (``write``) store them in the model's card. Returns the measurement."""
    from faceembed.data.lfw import pair_images, read_landmarks, read_pairs
    from faceembed.evaluation.verification import ten_fold_accuracy
    from faceembed.faces.align_files import align_images_in_memory
    from faceembed.faces.embed import FaceModel
    from faceembed.inference.backends import default_backend
    from faceembed.models.card import Thresholds
    from faceembed.models.registry import resolve_model

    root = Path(lfw_root)
    pairs_file = Path(pairs) if pairs else root / "pairs.txt"
    marks_file = Path(landmarks) if landmarks else root / "lfw_landmark.txt"
    pair_list = read_pairs(pairs_file)
    names = pair_images(pair_list)
    fm = FaceModel.load(model, default_backend(resolve_model(model)))  # fp32: thresholds of the model itself
    c = fm.card
    faces = align_images_in_memory(root / "images", read_landmarks(marks_file), names, size=(c.height, c.width),
                                   workers=workers, progress=progress, template=c.template)
    emb, _ = fm.embed(faces)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    genuine, impostor = all_pair_scores(emb, [n.split("/")[0] for n in names])
    row = {n: i for i, n in enumerate(names)}
    scores = np.array([float(emb[row[p.relpath1]] @ emb[row[p.relpath2]]) for p in pair_list])
    same = np.array([p.same for p in pair_list])
    m = measure_thresholds(genuine, impostor, fars, scores, same)
    m["ten_fold_accuracy"] = ten_fold_accuracy(scores, same, np.array([p.fold for p in pair_list]))["mean"]
    protocol = (f"cosine; {len(names)} images of {pairs_file.name} aligned from {marks_file.name} onto the "
                f"'{c.template}' template; FAR over all {m['impostor_pairs']} impostor pairs among them "
                f"({m['genuine_pairs']} genuine); best_accuracy over the file's {len(pair_list)} pairs")
    thresholds = Thresholds("cosine", f"LFW ({pairs_file.name})", protocol,
                            {k: v["threshold"] for k, v in m["at_far"].items()},
                            m["best_accuracy"]["threshold"], m["best_accuracy"]["accuracy"])
    written = None
    if write:
        written = str(write_thresholds(model, fm.path, c, thresholds))
    return {"model": str(fm.path), "thresholds": thresholds.__dict__, "written": written, **m}


def write_thresholds(model: str | Path, path: Path, card: Any, thresholds: Any) -> Path:
    """Store ``thresholds``: for a built-in model as the user's calibration (kept apart from the shipped card,
    :mod:`faceembed.models.user_calibration`), else in the model file's card. Returns the file written."""
    from faceembed.models.card_io import write_card
    from faceembed.models.registry import BUILTIN, builtin_of
    from faceembed.models.user_calibration import write_user_thresholds

    name = builtin_of(model, path)
    if name is None:
        write_card(path, card.replace(thresholds=thresholds))
        return path
    written = write_user_thresholds(name, thresholds)
    BUILTIN[name].path()  # the cached checkpoint's card takes the calibration now
    return written


def reset_calibration(model: str | Path) -> dict[str, Any]:
    """Forget the user's calibration of built-in ``model``: its shipped thresholds come back. Another model is one
    clear error (its thresholds live in its own card: calibrate it again)."""
    from faceembed.errors import FaceembedError
    from faceembed.models.registry import BUILTIN, builtin_of
    from faceembed.models.user_calibration import remove_user_thresholds

    name = builtin_of(model)
    if name is None:
        raise FaceembedError(f"--reset applies to built-in models ({', '.join(BUILTIN)}); {str(model)!r}'s "
                             "thresholds are in its own card: calibrate it again to change them")
    removed = remove_user_thresholds(name)
    BUILTIN[name].path()  # the cached checkpoint's card goes back to the shipped thresholds
    return {"model": name, "removed_user_calibration": removed, "thresholds": "shipped"}
