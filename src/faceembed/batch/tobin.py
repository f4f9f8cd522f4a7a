"""``tobin``: dump preprocessed input tensors as raw float32 files, one per batch, plus label files and a
manifest, in the layout the reference batch-inference tool reads (NHWC, little-endian)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceembed.data.preprocess import preprocess
from faceembed.data.tensorfiles import MANIFEST, read_manifest, write_bin, write_labels, write_manifest
from faceembed.errors import FaceembedError
from faceembed.files import remove_stale_temps, write_text
from faceembed.models.card import ModelCard, card_from_input_spec
from faceembed.models.checkpoint import FACE_INPUT_112x96

SKIPPED = "skipped.txt"


@dataclass
class TobinSummary:
    """Counts of a ``tobin`` run: batch files written now, kept from an interrupted run, and images that
    could not be read (``--on-error skip``; listed in ``skipped.txt``)."""

    out_dir: str
    files: int
    files_done: int
    files_skipped: int
    images: int
    images_failed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The counts (failures by name are in ``skipped.txt``)."""
        return {k: v for k, v in asdict(self).items() if k != "failed"}


def mnist_tensors(
    split: str = "test",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    data_root: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST images as NHWC float32 in [0, 1] (the reference's ``input_x``), labels, and source indices.

    ``shuffle_seed`` draws a random subset as the reference's shuffling reader did; default: file order.
    """
    from faceembed.data.mnist import default_mnist_root, load_mnist

    images, labels = load_mnist(data_root or default_mnist_root(), split)
    order = np.arange(len(images))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(images))
    if limit is not None:
        if not 0 < limit <= len(images):
            raise FaceembedError(f"--limit must be in 1..{len(images)}, not {limit}")
        order = order[:limit]
    x = (images[order].astype(np.float32) / 255.0)[..., None]
    return x, labels[order].astype(np.int64), order


def write_batches(
    x: np.ndarray,
    labels: np.ndarray | None,
    out_dir: str | Path,
    batch_size: int,
    name: str = "{i}_image.bin",
    label_name: str = "{i}_label.txt",
    extra: dict | None = None,
    input_name: str = "input",
    items: list[str] | None = None,
    failed: list[tuple[str, str]] | None = None,
    layout: str = "NHWC",
) -> TobinSummary:
    """Write ``x`` (float32, ``layout``: NHWC, or NCHW for a model whose card says so) in batches of
    ``batch_size``: ``{i}_image.bin`` + ``{i}_label.txt``.

    Resumable: the manifest (``"complete": false``) is written first, as the plan; a rerun with the same
    settings keeps every planned file that exists with the planned size and writes the rest (a killed
    writer's temporary files are swept). A folder planned with other settings is refused. ``failed``
    (``(item, reason)`` of inputs left out) goes to ``skipped.txt``.
    """
    if batch_size < 1:
        raise FaceembedError(f"--batch-size must be >= 1, not {batch_size}")
    if len(x) == 0:
        raise FaceembedError("no images to write (every input failed or the selection is empty)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    files = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        entry: dict = {"name": name.format(i=i), "count": int(min(batch_size, len(x) - start)), "first": int(start)}
        if labels is not None:
            entry["label"] = label_name.format(i=i)
        if items is not None:
            entry["items"] = list(items[start:start + batch_size])
        files.append(entry)
    plan = {"dtype": "float32", "layout": layout, "item_shape": list(x.shape[1:]), "input_name": input_name,
            "batch_size": batch_size, "count": int(len(x)), "files": files, **(extra or {})}
    resumable = _resumable_plan(out, plan)
    write_manifest(out, {**plan, "complete": False})
    item_bytes = int(np.prod(x.shape[1:])) * 4
    done = skipped = 0
    for entry in files:
        start, count = entry["first"], entry["count"]
        path = out / entry["name"]
        label_ok = "label" not in entry or (out / entry["label"]).is_file()
        if resumable and label_ok and path.is_file() and path.stat().st_size == item_bytes * count:
            skipped += 1
            continue
        write_bin(path, np.ascontiguousarray(x[start:start + count], dtype=np.float32))
        if labels is not None:
            write_labels(out / entry["label"], labels[start:start + count])
        done += 1
    failed = sorted(failed or [])
    if failed:
        write_text(out / SKIPPED, "".join(f"{item}\t{why}\n" for item, why in failed))
    elif (out / SKIPPED).exists():
        (out / SKIPPED).unlink()
    write_manifest(out, {**plan, "complete": True, "images_failed": len(failed)})
    return TobinSummary(str(out), len(files), done, skipped, int(len(x)), len(failed), failed)


def _resumable_plan(out: Path, plan: dict) -> bool:
    """True when ``out`` holds a manifest of this very plan (files may be missing); False when it holds
    none. A manifest of other settings is refused: its same-sized files would otherwise be taken as done."""
    old = read_manifest(out)
    if old is None:
        return False
    differ = sorted(k for k in (set(plan) | set(old)) - {"format", "version", "complete", "images_failed"}
                    if old.get(k) != plan.get(k))
    if differ:
        raise FaceembedError(
            f"{out / MANIFEST} was written with other settings ({', '.join(differ)} differ); choose an empty "
            "--out folder or delete this one"
        )
    return True


def tobin_mnist(
    out_dir: str | Path,
    split: str = "test",
    batch_size: int = 32,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    data_root: str | Path | None = None,
) -> TobinSummary:
    """``faceembed tobin mnist``: MNIST as reference-compatible batch files."""
    from faceembed.data.mnist import default_mnist_root

    x, labels, order = mnist_tensors(split, limit, shuffle_seed, data_root)
    extra = {
        "dataset": "mnist",
        "source": str(Path(data_root or default_mnist_root()).resolve()),
        "split": split,
        "shuffle_seed": shuffle_seed,
        "preprocess": "pixel / 255, NHWC [N, 28, 28, 1]",
    }
    return write_batches(x, labels, out_dir, batch_size, extra=extra, input_name="input_x")


def default_face_card() -> ModelCard:
    """The input of faceembed's SphereFace / MobileFaceNet models (112x96 RGB NHWC, ``(x - 127.5) / 128``,
    SphereFace alignment): what ``tobin lfw`` writes without ``--model``."""
    return card_from_input_spec(FACE_INPUT_112x96, embedding_size=128, name="sphereface-112x96")


def face_tensors(images: np.ndarray, card: ModelCard | None = None, flip: bool = False) -> np.ndarray:
    """Aligned uint8 RGB faces ``[N, H, W, 3]`` as the model's float32 input (:func:`preprocess` with ``card``,
    default :func:`default_face_card`); ``flip`` mirrors them first."""
    x = images[:, :, ::-1] if flip else images
    return preprocess(np.ascontiguousarray(x), card or default_face_card())


def _card_of(model: str | Path | None) -> tuple[ModelCard, dict]:
    """The card tensors are made for (a model's, or the default) and what the manifest records of it."""
    if model is None:
        card = default_face_card()
        return card, {"card": card.to_dict()}
    from faceembed.fingerprint import file_identity
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    model = resolve_model(model)  # a model name: its file (what the manifest records)
    card = read_card(model)
    return card, {"card": card.to_dict(), "model": file_identity(model)}


def _describe(card: ModelCard, aligned_with: str) -> str:
    norm = f"(x - {'/'.join(f'{m:g}' for m in card.mean)}) / {'/'.join(f'{s:g}' for s in card.std)}"
    return f"{norm}, {card.color}, {card.layout}, {card.height}x{card.width}, {card.template} template, {aligned_with}"


def tobin_lfw(lfw_root: str | Path, out_dir: str | Path, landmarks: str | Path | None = None,
              batch_size: int = 1, pairs_only: bool = True, flip: bool = False, limit: int | None = None,
              workers: int | None = None, progress: bool = True, pairs: str | Path | None = None,
              on_error: str = "stop", model: str | Path | None = None) -> TobinSummary:
    """``faceembed tobin lfw``: align LFW faces (landmark file) and write them as ``{i}.bin`` files, the
    reference's PFE layout; the manifest's ``items`` name the image behind every row. By default only the
    images of ``pairs`` (``pairs.txt``) are written. The crop, alignment template, colour, normalisation and
    layout are ``model``'s card's (default: :func:`default_face_card`). ``on_error="skip"`` leaves unreadable
    images out and lists them in ``skipped.txt``; ``"stop"`` raises at the first one."""
    from faceembed.data.lfw import list_lfw_images, pair_images, read_landmarks, read_pairs
    from faceembed.files import file_sha256

    if on_error not in ("stop", "skip"):
        raise FaceembedError(f"--on-error must be 'stop' or 'skip', not {on_error!r}")
    card, recorded = _card_of(model)
    root = Path(lfw_root)
    marks_file = Path(landmarks) if landmarks else root / "lfw_landmark.txt"
    marks = read_landmarks(marks_file)
    if pairs_only:
        names = pair_images(read_pairs(Path(pairs) if pairs else root / "pairs.txt"))
    else:
        names = list_lfw_images(root / "images")
    names = names[:limit] if limit else names
    faces, names, failed = _align(root / "images", marks, names, card, workers, progress, on_error)
    extra = {"dataset": "lfw", "flip": flip, "preprocess": _describe(card, f"aligned with {marks_file.name}"),
             "landmarks_sha256": file_sha256(marks_file), **recorded}
    return write_batches(face_tensors(faces, card, flip=flip), None, out_dir, batch_size, name="{i}.bin",
                         extra=extra, input_name=card.input_name, items=names, failed=failed, layout=card.layout)


def _align(image_root: Path, marks: dict, names: list[str], card: ModelCard, workers: int | None,
           progress: bool, on_error: str, chunk: int = 512) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Faces of ``names`` aligned for ``card``; with ``on_error="skip"`` a chunk that fails is redone image by
    image to find and leave out the unreadable ones. Returns (faces, the names kept, (name, reason) of the
    rest)."""
    from faceembed.faces.align_files import align_images_in_memory

    size, template = (card.height, card.width), card.template
    if on_error == "stop":
        return align_images_in_memory(image_root, marks, names, size=size, workers=workers, progress=progress,
                                      template=template), names, []
    parts, kept, failed = [], [], []
    for start in range(0, len(names), chunk):
        part = names[start:start + chunk]
        try:
            parts.append(align_images_in_memory(image_root, marks, part, size=size, workers=workers,
                                                template=template))
            kept += part
            continue
        except FaceembedError:
            pass
        for rel in part:
            try:
                parts.append(align_images_in_memory(image_root, marks, [rel], size=size, workers=1,
                                                    template=template))
                kept.append(rel)
            except FaceembedError as exc:
                failed.append((rel, exc.one_line()))
    faces = np.concatenate(parts) if parts else np.empty((0, size[0], size[1], 3), np.uint8)
    return faces, kept, failed


def tobin_photos(images: str | Path, out_dir: str | Path, model: str | Path | None = None,
                 landmarks: str | Path | None = None, batch_size: int = 1, workers: int | None = None,
                 progress: bool = True, **options: Any) -> TobinSummary:
    """``faceembed tobin photos``: every photo of a folder (any format, found by content) detected (MTCNN, or
    used whole), aligned and preprocessed for ``model``'s card, written as ``{i}.bin`` files whose manifest
    ``items`` name the photo behind every row. ``options`` are
    :class:`~faceembed.faces.embed.EmbedOptions` fields (detector, no_face, keep, on_error, min_face_size);
    photos left out are listed in ``skipped.txt``."""
    from faceembed.data.images import list_images
    from faceembed.data.lfw import read_landmarks
    from faceembed.faces.embed import EmbedOptions, align_for_card, find_faces

    card, recorded = _card_of(model)
    o = EmbedOptions(**{"on_error": "skip", **options}).check()
    root = Path(images)
    rels = list_images(root)
    marks = read_landmarks(landmarks) if landmarks is not None else None
    found, failed, whole = find_faces(root, rels, marks, workers, replace(o, progress=progress))
    ok = [r for r in rels if r in found]
    faces = align_for_card(root, found, ok, card, workers, o.on_error, failed)
    ok = [r for r in ok if r not in {f for f, _ in failed}]
    how = "used whole" if o.detector == "none" else "detected with MTCNN" if marks is None else "given landmarks"
    from faceembed.fingerprint import inputs_digest

    extra = {"dataset": "photos", "images": str(root.resolve()), "images_sha256": inputs_digest(
                 root / r for r in rels)["sha256"], "detector": o.detector, "no_face": o.no_face,
             "keep": o.keep, "used_whole": len([r for r in whole if r in set(ok)]),
             "preprocess": _describe(card, how), **recorded}
    return write_batches(face_tensors(faces, card), None, out_dir, batch_size, name="{i}.bin", extra=extra,
                         input_name=card.input_name, items=ok, failed=failed, layout=card.layout)


#: The ``tobin`` options each dataset takes (any other one given is refused, naming it).
TOBIN_OPTIONS = {
    "mnist": {"split", "shuffle_seed", "data", "limit"},
    "lfw": {"landmarks", "pairs", "all_images", "flip", "on_error", "model", "data", "limit"},
    "photos": {"images", "model", "landmarks", "on_error", "detector", "no_face", "keep"},
}
_TOBIN_DEFAULTS = {"split": "test", "shuffle_seed": None, "landmarks": None, "pairs": None, "all_images": False,
                   "flip": False, "on_error": None, "model": None, "images": None, "detector": "mtcnn",
                   "no_face": "skip", "keep": "largest", "data": None, "limit": None}


def tobin_dataset(dataset: str, out: str | Path, batch_size: int | None = None, progress: bool = True,
                  **options: Any) -> Any:
    """``faceembed tobin DATASET``: MNIST digits, LFW faces or a photo folder as input tensor files. ``options``
    are the command's (``split``, ``limit``, ``data``, ``landmarks``, ``pairs``, ``all_images``, ``flip``,
    ``on_error``, ``model``, ``images``, ``detector``, ``no_face``, ``keep``); one given to a dataset it does not
    apply to is one clear error naming it, before any work."""
    if dataset not in TOBIN_OPTIONS:
        raise FaceembedError(f"unknown dataset {dataset!r}; choose mnist, lfw or photos")
    o = {**_TOBIN_DEFAULTS, **options}
    unknown = set(options) - set(_TOBIN_DEFAULTS)
    if unknown:
        raise FaceembedError(f"tobin takes no option {', '.join(sorted(unknown))}")
    wrong = [k for k, v in options.items() if v != _TOBIN_DEFAULTS[k] and k not in TOBIN_OPTIONS[dataset]]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise FaceembedError(f"{flags} does not apply to 'tobin {dataset}'")
    if dataset == "mnist":
        return tobin_mnist(out, o["split"], batch_size or 32, o["limit"], o["shuffle_seed"], data_root=o["data"])
    if dataset == "lfw":
        return tobin_lfw(o["data"] or Path("../shared/data/lfw"), out, o["landmarks"], batch_size or 1,
                         pairs_only=not o["all_images"], flip=o["flip"], limit=o["limit"], progress=progress,
                         pairs=o["pairs"], on_error=o["on_error"] or "stop", model=o["model"])
    if o["images"] is None:
        raise FaceembedError("tobin photos needs --images FOLDER")
    return tobin_photos(o["images"], out, o["model"], o["landmarks"], batch_size or 1, progress=progress,
                        on_error=o["on_error"] or "skip", detector=o["detector"], no_face=o["no_face"], keep=o["keep"])
