"""Top-1 accuracy from a label folder and a prediction folder, as the reference's accuracy script, but
counting images (not files) and refusing files that do not pair up."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from faceembed.data.tensorfiles import read_bin, read_labels, read_npy, read_text_tensor
from faceembed.errors import InputFormatError, MissingInputError, ShapeMismatchError


@dataclass
class ClassificationResult:
    """Top-1 accuracy over all images, per class, and the confusion matrix (rows: truth)."""

    images: int
    files: int
    accuracy: float
    per_class: dict[str, float]
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)


def pair_key(name: str) -> str:
    """The reference pairs files by the part of the name before the first ``_``."""
    return name.split("_", 1)[0]


def classify(predictions: np.ndarray) -> np.ndarray:
    """Class ids from a prediction array: argmax of logits, or the ids themselves if 1 value per image."""
    p = np.asarray(predictions)
    if p.ndim >= 2 and p.shape[-1] > 1:
        return p.reshape(len(p), -1).argmax(axis=1)
    return p.reshape(-1).astype(np.int64)


def read_predictions(path: Path, count: int, outputs_meta: dict | None) -> np.ndarray:
    """Read one prediction file for ``count`` labels: .npy, .txt or .bin (shape from outputs.json, else
    inferred: 8 bytes per image = int64 class ids, otherwise float32 logits)."""
    if path.suffix == ".npy":
        return read_npy(path)
    if path.suffix == ".txt":
        return read_text_tensor(path)
    if outputs_meta and outputs_meta.get("item_shape"):
        return read_bin(path, outputs_meta.get("dtype", "float32"), outputs_meta["item_shape"], count)
    size = path.stat().st_size
    if size == 8 * count:
        return read_bin(path, "int64", (1,), count)
    if count and size % (4 * count) == 0:
        return read_bin(path, "float32", (size // (4 * count),), count)
    raise ShapeMismatchError(f"{size} bytes does not hold predictions for {count} labels", path)


def accuracy_from_folders(
    labels_dir: str | Path, predictions_dir: str | Path, output_index: int = 0, num_classes: int | None = None
) -> ClassificationResult:
    """Pair ``{key}_label.txt`` with ``{key}_*output_{output_index}.*`` and compute top-1 accuracy."""
    labels_dir, predictions_dir = Path(labels_dir), Path(predictions_dir)
    for d in (labels_dir, predictions_dir):
        if not d.is_dir():
            raise MissingInputError("folder not found", d)
    label_files = {pair_key(p.name): p for p in labels_dir.glob("*_label.txt")}
    suffix = f"output_{output_index}"
    pred_files = {
        pair_key(p.name): p for p in predictions_dir.iterdir() if p.is_file() and p.stem.endswith(suffix)
    }
    if not label_files:
        raise MissingInputError("no *_label.txt files", labels_dir)
    if not pred_files:
        raise MissingInputError(f"no *_{suffix}.* prediction files", predictions_dir)
    missing_pred = sorted(set(label_files) - set(pred_files))
    missing_label = sorted(set(pred_files) - set(label_files))
    if missing_pred or missing_label:
        raise InputFormatError(
            f"label and prediction files do not pair up: {len(missing_pred)} label files without predictions "
            f"(e.g. {missing_pred[:3]}), {len(missing_label)} predictions without labels (e.g. {missing_label[:3]})",
            predictions_dir,
        )
    meta = _output_meta(predictions_dir, output_index)
    truth, pred = [], []
    for key in sorted(label_files):
        y = read_labels(label_files[key])
        p = classify(read_predictions(pred_files[key], len(y), meta))
        if len(p) != len(y):
            raise ShapeMismatchError(
                f"{len(p)} predictions for {len(y)} labels in {label_files[key].name}", pred_files[key]
            )
        truth.append(y)
        pred.append(p)
    return summarize(np.concatenate(truth), np.concatenate(pred), len(label_files), num_classes)


def summarize(
    truth: np.ndarray, pred: np.ndarray, files: int = 1, num_classes: int | None = None
) -> ClassificationResult:
    """Accuracy, per-class accuracy and confusion matrix of class ids."""
    k = int(num_classes or max(truth.max(), pred.max()) + 1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (truth, np.clip(pred, 0, k - 1)), 1)
    per_class = {str(c): float(cm[c, c] / cm[c].sum()) for c in range(k) if cm[c].sum()}
    return ClassificationResult(int(len(truth)), files, float((truth == pred).mean()), per_class, cm.tolist())


def _output_meta(folder: Path, index: int) -> dict | None:
    path = folder / "outputs.json"
    if not path.is_file():
        return None
    try:
        outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise InputFormatError("outputs.json is not valid", path) from None
    return next((o for o in outputs if o.get("index") == index), None)
