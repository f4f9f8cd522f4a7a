"""``tobin``: dump preprocessed input tensors as raw float32 files, one per batch, plus label files and a
manifest, in the layout the reference batch-inference tool reads (NHWC, little-endian)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceembed.data.tensorfiles import read_manifest, write_bin, write_labels, write_manifest
from faceembed.errors import FaceembedError


@dataclass
class TobinSummary:
    """Counts of a ``tobin`` run."""

    out_dir: str
    files: int
    written: int
    skipped: int
    images: int


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
) -> TobinSummary:
    """Write ``x`` (NHWC float32) in batches of ``batch_size``: ``{i}_image.bin`` + ``{i}_label.txt``.

    Resumable: a batch file that exists with the right size is kept; the manifest is written last.
    """
    if batch_size < 1:
        raise FaceembedError(f"--batch-size must be >= 1, not {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_foreign_manifest(out, x, batch_size)
    files, written, skipped = [], 0, 0
    item_bytes = int(np.prod(x.shape[1:])) * 4
    for i, start in enumerate(range(0, len(x), batch_size)):
        chunk = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        fname = name.format(i=i)
        entry = {"name": fname, "count": int(len(chunk)), "first": int(start)}
        if items is not None:
            entry["items"] = list(items[start:start + batch_size])
        path = out / fname
        if path.is_file() and path.stat().st_size == item_bytes * len(chunk):
            skipped += 1
        else:
            write_bin(path, chunk)
            written += 1
        if labels is not None:
            entry["label"] = label_name.format(i=i)
            write_labels(out / entry["label"], labels[start : start + batch_size])
        files.append(entry)
    write_manifest(
        out,
        {
            "dtype": "float32",
            "layout": "NHWC",
            "item_shape": list(x.shape[1:]),
            "input_name": input_name,
            "batch_size": batch_size,
            "count": int(len(x)),
            "files": files,
            **(extra or {}),
        },
    )
    return TobinSummary(str(out), len(files), written, skipped, int(len(x)))


def _refuse_foreign_manifest(out: Path, x: np.ndarray, batch_size: int) -> None:
    """A rerun may resume, but must not mix batches of another shape or batch size into the folder."""
    manifest = read_manifest(out)
    if manifest is None:
        return
    if manifest["item_shape"] != list(x.shape[1:]) or manifest.get("batch_size") != batch_size:
        raise FaceembedError(
            f"{out} already holds tensors of item shape {manifest['item_shape']} and batch size "
            f"{manifest.get('batch_size')}; choose an empty --out folder"
        )


def tobin_mnist(
    out_dir: str | Path,
    split: str = "test",
    batch_size: int = 32,
    limit: int | None = None,
    shuffle_seed: int | None = None,
    data_root: str | Path | None = None,
) -> TobinSummary:
    """``faceembed tobin mnist``: MNIST as reference-compatible batch files."""
    x, labels, order = mnist_tensors(split, limit, shuffle_seed, data_root)
    extra = {
        "dataset": "mnist",
        "split": split,
        "shuffle_seed": shuffle_seed,
        "preprocess": "pixel / 255, NHWC [N, 28, 28, 1]",
    }
    return write_batches(x, labels, out_dir, batch_size, extra=extra, input_name="input_x")


def face_tensors(images: np.ndarray, mean: float = 127.5, scale: float = 128.0, flip: bool = False) -> np.ndarray:
    """Aligned uint8 RGB faces ``[N, H, W, 3]`` as the model's NHWC float32 input; ``flip`` mirrors them."""
    x = images[:, :, ::-1] if flip else images
    return ((x.astype(np.float32) - mean) / scale).astype(np.float32)


def tobin_lfw(lfw_root: str | Path, out_dir: str | Path, landmarks: str | Path | None = None,
              batch_size: int = 1, pairs_only: bool = True, flip: bool = False, limit: int | None = None,
              size: tuple[int, int] = (112, 96), workers: int | None = None,
              progress: bool = True, pairs: str | Path | None = None) -> TobinSummary:
    """``faceembed tobin lfw``: align LFW faces (landmark file) and write them as ``{i}.bin`` files, the
    reference's PFE layout; the manifest's ``items`` name the image behind every row. By default only the
    images of ``pairs`` (``pairs.txt``) are written."""
    from faceembed.data.align import align_images_in_memory
    from faceembed.data.lfw import list_lfw_images, pair_images, read_landmarks, read_pairs

    root = Path(lfw_root)
    marks = read_landmarks(Path(landmarks) if landmarks else root / "lfw_landmark.txt")
    if pairs_only:
        names = pair_images(read_pairs(Path(pairs) if pairs else root / "pairs.txt"))
    else:
        names = list_lfw_images(root / "images")
    names = names[:limit] if limit else names
    faces = align_images_in_memory(root / "images", marks, names, size=size, workers=workers, progress=progress)
    extra = {"dataset": "lfw", "flip": flip, "preprocess": "(x - 127.5) / 128, RGB, NHWC, aligned with "
             f"{Path(landmarks).name if landmarks else 'lfw_landmark.txt'}"}
    return write_batches(face_tensors(faces, flip=flip), None, out_dir, batch_size, name="{i}.bin",
                         extra=extra, input_name="input", items=names)
