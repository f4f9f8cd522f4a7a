"""Plots a person would rather look at than read: training curves, 2-d features on the circle,
confusion matrix. Each PNG is written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from faceembed.files import write_with  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` as PNG atomically and close it."""
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_training_curves(metrics: list[dict[str, Any]], path: str | Path) -> None:
    """Loss, accuracies and A-Softmax lambda per epoch."""
    epochs = [m["epoch"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [m["loss"] for m in metrics], "o-")
    axes[0].set(title="training loss", xlabel="epoch")
    for key in ("train_acc", "val_acc", "test_acc"):
        values = [m.get(key) for m in metrics]
        if any(v is not None and v == v for v in values):
            axes[1].plot(epochs, values, "o-", label=key.replace("_acc", ""))
    axes[1].set(title="top-1 accuracy", xlabel="epoch")
    axes[1].legend()
    axes[2].plot(epochs, [m["lambda"] for m in metrics], "o-")
    axes[2].set(title="A-Softmax lambda (end of epoch)", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_features_2d(features: np.ndarray, labels: np.ndarray, path: str | Path) -> None:
    """2-d features normalised onto the unit circle, coloured by class (SphereFace fig. 2 style)."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(f[sel, 0], f[sel, 1], s=3, alpha=0.5, label=str(c))
    ax.set(aspect="equal", title="test features on the unit circle")
    ax.legend(markerscale=4, fontsize=7, loc="center")
    save_figure(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: list[str], path: str | Path) -> None:
    """Confusion matrix (rows: truth, columns: prediction) with counts."""
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(0.55 * len(cm) + 2.5, 0.55 * len(cm) + 2))
    ax.imshow(np.log1p(cm), cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="black" if i != j else "white")
    ax.set(xticks=range(len(cm)), yticks=range(len(cm)), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title=f"accuracy {np.trace(cm) / max(1, cm.sum()):.4f}")
    save_figure(fig, path)
