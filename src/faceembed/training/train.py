"""``faceembed train``: a SphereFace-style network on MNIST with A-Softmax (or another margin loss).

Each epoch writes, atomically: ``checkpoint.pt`` (faceembed format), ``state.pt`` (optimizer, scheduler,
shuffling generator and RNG state: what ``--resume`` needs to continue bit-exactly), one JSON line in
``metrics.jsonl`` and ``curves.png`` (plus ``features.png`` with a 2-d embedding).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from faceembed.data.mnist import default_mnist_root, load_mnist
from faceembed.errors import CheckpointError, FaceembedError
from faceembed.files import append_line, write_text, write_with
from faceembed.models.checkpoint import MNIST_INPUT, save_checkpoint
from faceembed.models.mnist_net import MnistClassifier
from faceembed.report.plots import plot_features_2d, plot_training_curves


@dataclass
class TrainConfig:
    """Training settings; the defaults are the demo's (chosen on a validation split, see README)."""

    embedding_size: int = 64
    loss: str = "asoftmax"
    m: float | None = None
    s: float | None = None
    lambda_base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    lambda_min: float = 5.0
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    seed: int = 0
    limit_train: int | None = None
    val_split: int = 0  # hold out the last N training images as validation (for choosing settings)
    num_threads: int | None = None
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])

    @classmethod
    def quick(cls) -> TrainConfig:
        """A short run for CI: one epoch on 20,000 images (>= 0.98 test accuracy in about a minute)."""
        return cls(epochs=1, limit_train=20000, warmup_steps=50)

    def model_config(self) -> dict[str, Any]:
        return {"embedding_size": self.embedding_size, "num_classes": 10, "loss": self.loss, "m": self.m,
                "s": self.s, "widths": list(self.widths), "units": [1] * len(self.widths)}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, per step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _split(config: TrainConfig, root: Path) -> tuple[torch.Tensor, ...]:
    images, labels = load_mnist(root, "train")
    if config.limit_train:
        images, labels = images[: config.limit_train], labels[: config.limit_train]
    if config.val_split:
        if config.val_split >= len(images):
            raise FaceembedError(f"val_split {config.val_split} leaves no training images")
        val = (images[-config.val_split:], labels[-config.val_split:])
        images, labels = images[: -config.val_split], labels[: -config.val_split]
    else:
        val = (images[:0], labels[:0])
    test = load_mnist(root, "test")
    return tuple(_tensor(x, y) for x, y in ((images, labels), val, test))


def _tensor(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None], torch.from_numpy(labels)


@torch.no_grad()
def evaluate(model: MnistClassifier, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float | None:
    """Top-1 accuracy of the inference logits (no margin); None without images."""
    if len(x) == 0:
        return None
    model.eval()
    correct = sum(int((model(x[i:i + batch])[0].argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def _features(model: MnistClassifier, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 1000])[1] for i in range(0, len(x), 1000)]).numpy()


def _read_metrics(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` up to ``epochs``; a line torn by a kill (or any unreadable line) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return [r for r in rows if r["epoch"] <= epochs]


def train_mnist(config: TrainConfig, out_dir: str | Path, data_root: str | Path | None = None,
                resume: bool = False, progress: bool = True, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train and return the last epoch's metrics. ``resume`` continues from ``out_dir/state.pt`` exactly;
    ``stop_after_epoch`` ends this call early (as an interruption would)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = _split(config, Path(data_root or default_mnist_root()))
    torch.manual_seed(config.seed)
    model = MnistClassifier(**config.model_config())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, momentum=config.momentum)
    steps_per_epoch = math.ceil(len(x_tr) / config.batch_size)
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, config.warmup_steps))
    gen = torch.Generator().manual_seed(config.seed)
    start_epoch, metrics = 0, []
    if resume and (out / "state.pt").exists():
        start_epoch, metrics = _restore(out, model, opt, sched, gen, config)
    if not metrics:  # state.pt of an older version: no metrics inside
        metrics = _read_metrics(out / "metrics.jsonl", start_epoch)
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in metrics))
    last: dict[str, Any] = metrics[-1] if metrics else {}
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        for epoch in range(start_epoch, config.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps_per_epoch, info="")
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(x_tr), generator=gen)
            loss_sum, correct, seen = 0.0, 0, 0
            for i in range(0, len(order), config.batch_size):
                idx = order[i:i + config.batch_size]
                xb, yb = x_tr[idx], y_tr[idx]
                emb = model.backbone(xb)
                logits = model.head(emb, yb)
                loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(idx)
                with torch.no_grad():
                    correct += int((model.head.logits(emb).argmax(1) == yb).sum())
                seen += len(idx)
                bar.update(task, advance=1, info=f"loss {loss_sum / seen:.4f} acc {correct / seen:.4f}")
            bar.remove_task(task)
            last = {"epoch": epoch + 1, "loss": loss_sum / seen, "lambda": model.head.current_lambda(),
                    "lr": opt.param_groups[0]["lr"], "train_acc": correct / seen,
                    "val_acc": evaluate(model, x_val, y_val), "test_acc": evaluate(model, x_te, y_te),
                    "seconds": round(time.perf_counter() - t0, 2)}
            metrics.append(last)
            _save_epoch(out, model, opt, sched, gen, config, metrics)
            append_line(out / "metrics.jsonl", json.dumps(last))
            plot_training_curves(metrics, out / "curves.png")
            if config.embedding_size == 2:
                plot_features_2d(_features(model, x_te), y_te.numpy(), out / "features.png")
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    return last


def _save_epoch(out: Path, model, opt, sched, gen, config: TrainConfig, metrics: list[dict[str, Any]]) -> None:
    # checkpoint first, then state: a state.pt always points at a checkpoint of the same epoch or later.
    # state.pt carries every epoch's metrics, so a kill between it and the metrics.jsonl append loses nothing.
    last = metrics[-1]
    save_checkpoint(out / "checkpoint.pt", "mnist_classifier", config.model_config(), model, MNIST_INPUT,
                    extra={"epoch": last["epoch"], "train_config": asdict(config), "metrics": last})
    state = {"epoch": last["epoch"], "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "config": asdict(config),
             "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
             "metrics": [dict(m) for m in metrics]}
    write_with(out / "state.pt", lambda tmp: torch.save(state, tmp))


_STATE_KEYS = ("epoch", "optimizer", "scheduler", "generator", "torch_rng", "config", "model")


def _restore(out: Path, model, opt, sched, gen, config: TrainConfig) -> tuple[int, list[dict[str, Any]]]:
    """Load ``state.pt`` into the training objects; returns (finished epochs, their metrics rows)."""
    path = out / "state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read the training state ({first}); expected a state.pt written by "
                              "'faceembed train' (delete the folder to start over)", path) from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"training state lacks {', '.join(missing)}; expected a state.pt written by "
                              "'faceembed train'", path)
    if state.get("config") != asdict(config):
        raise CheckpointError("--resume with different settings than the interrupted run", path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    epoch = int(state["epoch"])
    return epoch, [dict(m) for m in state.get("metrics", []) if m.get("epoch", epoch + 1) <= epoch]
