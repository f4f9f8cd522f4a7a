"""Train PFE uncertainty heads on a frozen backbone, LFW cross-fold (Shi & Jain, ICCV 2019).

Only the head trains: the backbone's 512x7x6 feature maps are extracted once (cached, float16) and the head
is fit on them with the MLS loss over genuine pairs of P people x K images batches. For LFW fold k the
head is trained on people who appear in no pair of fold k, early-stopped on held-out *training* people,
and fold k's pairs are scored with head k only: nothing is ever selected on a test fold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceembed.files import write_json, write_with
from faceembed.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from faceembed.models.pfe_head import PFEModel, UncertaintyHead


@dataclasses.dataclass
class PFETrainConfig:
    """Head training hyper-parameters (paper: P=64, K=4, SGD momentum 0.9, lr 1e-3, weight decay 5e-4)."""

    people_per_batch: int = 64
    images_per_person: int = 4
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_steps: int = 800
    eval_every: int = 25
    patience: int = 8  # evaluations without improvement before stopping
    val_fraction: float = 0.1
    val_metric: str = "auc"  # "auc" or "accuracy" (best-threshold) of MLS on validation pairs
    max_val_genuine_per_person: int = 100
    bn_momentum: float = 0.01
    seed: int = 0


class PKSampler:
    """Endless batches of ``P`` people x up to ``K`` distinct images each (people with >= 2 images only).

    People are drawn without replacement through shuffled epochs; a person with fewer than ``K`` images
    contributes all of them (no duplicates, so no zero-distance genuine pairs).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, people_per_batch: int, images_per_person: int,
                 seed: int = 0):
        labels = np.asarray(labels)
        self.P, self.K = people_per_batch, images_per_person
        self.rng = np.random.default_rng(seed)
        groups: dict[int, list[int]] = {}
        for i, lab in enumerate(labels.tolist()):
            groups.setdefault(lab, []).append(i)
        self.groups = [np.asarray(v) for _, v in sorted(groups.items()) if len(v) >= 2]
        if len(self.groups) < 2:
            raise ValueError("PKSampler needs at least 2 people with >= 2 images")
        self.P = min(self.P, len(self.groups))
        self._order: list[int] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if len(self._order) < self.P:
            self._order += self.rng.permutation(len(self.groups)).tolist()
        people, self._order = self._order[:self.P], self._order[self.P:]
        picks = [self.rng.choice(self.groups[p], size=min(self.K, len(self.groups[p])), replace=False)
                 for p in people]
        return np.concatenate(picks)


def _normalise_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


def extract_feature_maps(backbone: nn.Module, images: np.ndarray, batch_size: int = 64,
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC [N,112,96,3] -> (feature maps float16 [N, C*H*W], mu float32 [N, D] L2-normalised)."""
    backbone.eval()
    n = len(images)
    fmaps: np.ndarray | None = None
    mu: np.ndarray | None = None
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            fm = backbone.feature_map(_normalise_nchw(images[start:start + batch_size]))
            emb = F.normalize(backbone.embed_from_feature_map(fm), dim=1)
            fm = torch.flatten(fm, 1)
            if fmaps is None:
                fmaps = np.empty((n, fm.shape[1]), np.float16)
                mu = np.empty((n, emb.shape[1]), np.float32)
            fmaps[start:start + len(fm)] = fm.numpy().astype(np.float16)
            mu[start:start + len(fm)] = emb.numpy()
            if progress and (start // batch_size) % 20 == 0:
                print(f"  feature maps {start + len(fm)}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    assert fmaps is not None and mu is not None, "no images"
    return fmaps, mu


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_feature_maps(cache_dir: Path, backbone_ckpt: Path, backbone: nn.Module, relpaths: list[str],
                        load_images: Any, extra_key: str = "", progress: bool = True,
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Feature maps and mu for ``relpaths``, cached under a key of (checkpoint hash, image list, extra_key).

    ``load_images()`` returns the aligned uint8 images in ``relpaths`` order; it is only called on a miss.
    """
    key = hashlib.sha256(("\n".join([_file_sha256(backbone_ckpt), extra_key, *relpaths])).encode())
    path = Path(cache_dir) / f"fmaps_{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["fmaps"], z["mu"], {"cached": 1.0}
    t0 = time.perf_counter()
    images = load_images()
    t1 = time.perf_counter()
    fmaps, mu = extract_feature_maps(backbone, images, progress=progress)
    t2 = time.perf_counter()
    write_with(path, lambda tmp: np.savez(tmp, fmaps=fmaps, mu=mu))
    return fmaps, mu, {"cached": 0.0, "align_s": t1 - t0, "extract_s": t2 - t1}


def make_validation_pairs(labels: np.ndarray, max_genuine_per_person: int, seed: int) -> np.ndarray:
    """[M, 3] int rows (i, j, same) among validation images: capped genuine pairs + as many impostors."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    rows: list[tuple[int, int, int]] = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        pairs = [(int(a), int(b)) for k, a in enumerate(idx) for b in idx[k + 1:]]
        if len(pairs) > max_genuine_per_person:
            pairs = [pairs[t] for t in rng.choice(len(pairs), max_genuine_per_person, replace=False)]
        rows += [(a, b, 1) for a, b in pairs]
    n_gen = len(rows)
    while len(rows) < 2 * n_gen:
        a, b = rng.integers(0, len(labels), size=2)
        if labels[a] != labels[b]:
            rows.append((int(a), int(b), 0))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def head_sigma_sq(head: UncertaintyHead, fmaps: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """sigma^2 [N, D] float32 from flattened float16/32 feature maps, head in eval mode."""
    head.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(fmaps), batch_size):
            x = torch.from_numpy(np.asarray(fmaps[start:start + batch_size], np.float32))
            out.append(torch.exp(head(x)).numpy())
    return np.concatenate(out)


def train_head(fmaps: np.ndarray, labels: np.ndarray, mu: np.ndarray, config: PFETrainConfig,
               val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, seed: int | None = None,
               progress: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fit a fresh UncertaintyHead with the PFE loss on frozen (feature map, mu) pairs.

    ``val = (fmaps, labels, mu)`` of held-out people: every ``eval_every`` steps MLS is scored on their
    genuine/impostor pairs and the best head (``config.val_metric``) is kept; training stops after
    ``patience`` evaluations without improvement. Without ``val`` the last head is returned.
    Returns (head state dict, history).
    """
    from faceembed.evaluation.scores import mls_scores
    from faceembed.evaluation.verification import auc, best_threshold
    from faceembed.losses import pfe_loss

    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    x_all = torch.from_numpy(np.asarray(fmaps, np.float32))
    mu_all = torch.from_numpy(np.asarray(mu, np.float32))
    lab_all = torch.from_numpy(np.asarray(labels, np.int64))
    head = UncertaintyHead(x_all.shape[1], mu_all.shape[1], bn_momentum=config.bn_momentum)
    decay = [p for n, p in head.named_parameters() if n.startswith("fc")]
    other = [p for n, p in head.named_parameters() if not n.startswith("fc")]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.weight_decay},
                           {"params": other, "weight_decay": 0.0}], lr=config.lr, momentum=config.momentum)
    sampler = PKSampler(labels, config.people_per_batch, config.images_per_person, seed=seed)
    history: dict[str, Any] = {"loss": [], "val": [], "best_step": 0, "best_metric": None}
    vpairs = None
    if val is not None:
        vpairs = make_validation_pairs(val[1], config.max_val_genuine_per_person, seed + 1)
        vs = vpairs[:, 2].astype(bool)
        cos = (val[2][vpairs[:, 0]] * val[2][vpairs[:, 1]]).sum(1)
        history["val_cosine"] = {"auc": auc(cos, vs), "accuracy": best_threshold(cos, vs)[1],
                                 "pairs": len(vpairs)}

    def evaluate(step: int) -> float:
        assert val is not None and vpairs is not None
        s = head_sigma_sq(head, val[0])
        sc = mls_scores(val[2][vpairs[:, 0]], s[vpairs[:, 0]], val[2][vpairs[:, 1]], s[vpairs[:, 1]])
        same = vpairs[:, 2].astype(bool)
        rec = {"step": step, "auc": auc(sc, same), "accuracy": best_threshold(sc, same)[1],
               "mean_log_sigma_sq": float(np.log(s).mean())}
        history["val"].append(rec)
        if progress:
            print(f"    step {step}: val {rec}", flush=True)
        return rec[config.val_metric]

    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    best = evaluate(0) if val is not None else None
    history["best_metric"] = best
    bad = 0
    for step in range(1, config.max_steps + 1):
        head.train()
        idx = torch.from_numpy(next(sampler))
        loss = pfe_loss(mu_all[idx], head(x_all[idx]), lab_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        if val is not None and step % config.eval_every == 0:
            metric = evaluate(step)
            if metric > best:
                best, bad = metric, 0
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
                history.update(best_step=step, best_metric=best)
            else:
                bad += 1
                if bad >= config.patience:
                    break
    history["steps"] = step
    if val is None:
        best_state = {k: v.clone() for k, v in head.state_dict().items()}
        history["best_step"] = step
    return best_state, history


def _ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """The standard protocol (threshold chosen on the other 9 folds): {accuracy, std, per_fold}."""
    from faceembed.evaluation.verification import ten_fold_accuracy

    res = ten_fold_accuracy(scores, same, folds)
    return {"accuracy": res["mean"], "std": res["std"], "per_fold": res["per_fold"]}


def _pfe_config(arch: str, config: dict[str, Any], head_in: int, bn_momentum: float) -> dict[str, Any]:
    return {"backbone": arch, "backbone_config": dict(config), "head_in_features": head_in,
            "bn_momentum": bn_momentum}


def train_pfe_crossfold(backbone_ckpt: str | Path, lfw_root: str | Path, landmarks: str | Path,
                        out_dir: str | Path, config: PFETrainConfig | None = None,
                        progress: bool = True, workers: int = 2) -> dict[str, Any]:
    """Train one head per LFW View-2 fold on the people outside that fold; score each fold with its head.

    ``lfw_root`` holds ``images/`` and ``pairs.txt``; ``backbone_ckpt`` is a faceembed checkpoint (convert
    foreign ones with ``faceembed.models.importers.import_checkpoint``). Writes ``out_dir/heads/fold_KK.pt``
    (arch ``pfe``: backbone + head; a fold whose file exists is reused, not retrained) and
    ``out_dir/pfe_results.json``: cosine and MLS 10-fold accuracy on the same single-image mu.
    """
    from faceembed.data.align import align_images_in_memory
    from faceembed.data.lfw import fold_people, list_lfw_images, read_landmarks, read_pairs
    from faceembed.evaluation.scores import cosine_scores, mls_scores
    from faceembed.evaluation.verification import best_threshold

    config = config or PFETrainConfig()
    backbone_ckpt, lfw_root, out_dir = Path(backbone_ckpt), Path(lfw_root), Path(out_dir)
    t_start = time.perf_counter()
    torch.set_num_threads(min(torch.get_num_threads(), max(1, workers)))
    payload = read_checkpoint(backbone_ckpt)
    arch, bconfig = payload["arch"], payload["config"]
    backbone, spec, _ = load_checkpoint(backbone_ckpt)
    del payload
    pairs = read_pairs(lfw_root / "pairs.txt")
    all_images = list_lfw_images(lfw_root / "images")
    by_person: dict[str, list[str]] = {}
    for rp in all_images:
        by_person.setdefault(rp.split("/")[0], []).append(rp)
    multi = sorted(p for p, v in by_person.items() if len(v) >= 2)
    needed = sorted({rp for p in multi for rp in by_person[p]}
                    | {rp for pr in pairs for rp in (pr.relpath1, pr.relpath2)})
    marks = read_landmarks(landmarks)
    size = (spec.height, spec.width)

    def load_images() -> np.ndarray:
        imgs = align_images_in_memory(lfw_root / "images", marks, needed, size=size, workers=workers)
        return imgs[..., ::-1] if spec.color == "BGR" else imgs

    fmaps, mu, timing = cached_feature_maps(
        out_dir / "cache", backbone_ckpt, backbone, needed, load_images,
        extra_key=f"{Path(landmarks).name}:{_file_sha256(Path(landmarks))}:{size}:{spec.color}",
        progress=progress)
    row = {rp: i for i, rp in enumerate(needed)}
    people_of_fold = fold_people(pairs)
    n_folds = len(people_of_fold)
    i1 = np.array([row[p.relpath1] for p in pairs])
    i2 = np.array([row[p.relpath2] for p in pairs])
    same = np.array([p.same for p in pairs], bool)
    folds = np.array([p.fold for p in pairs])
    mls = np.zeros(len(pairs))
    head_in = fmaps.shape[1]
    pfe_cfg = _pfe_config(arch, bconfig, head_in, config.bn_momentum)
    pfe_spec = dataclasses.replace(spec, output_names=PFEModel.output_names)
    fold_info: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    mls_raw = np.zeros(len(pairs))

    def rows_of(people: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = [row[rp] for p in people for rp in by_person[p]]
        lab = [j for j, p in enumerate(people) for _ in by_person[p]]
        return np.asarray(idx), np.asarray(lab)

    for k in range(n_folds):
        head_path = out_dir / "heads" / f"fold_{k:02d}.pt"
        # Training people: >= 2 images and in no pair of fold k; a seeded 10% of them validate.
        train_people = [p for p in multi if p not in people_of_fold[k]]
        perm = np.random.default_rng(config.seed + k).permutation(len(train_people))
        n_val = max(2, int(round(config.val_fraction * len(train_people))))
        val_people = sorted(train_people[i] for i in perm[:n_val])
        fit_people = [p for p in train_people if p not in set(val_people)]
        va_idx, va_lab = rows_of(val_people)
        if head_path.is_file():
            model, _, extra = load_checkpoint(head_path, expect_arch="pfe")
            info = {**extra, "reused": True}
        else:
            tr_idx, tr_lab = rows_of(fit_people)
            t0 = time.perf_counter()
            state, hist = train_head(fmaps[tr_idx], tr_lab, mu[tr_idx], config,
                                     val=(fmaps[va_idx], va_lab, mu[va_idx]), seed=config.seed + k)
            model = PFEModel(**pfe_cfg)
            model.backbone.load_state_dict(backbone.state_dict())
            model.head.load_state_dict(state)
            model.eval()
            info = {"fold": k, "train_people": len(fit_people), "train_images": int(len(tr_idx)),
                    "val_people": len(val_people), "val_images": int(len(va_idx)),
                    "best_step": hist["best_step"], "steps": hist["steps"],
                    "val_metric": config.val_metric, "val_best": hist["best_metric"],
                    "val_cosine": hist.get("val_cosine"), "val_at_init": hist["val"][0] if hist["val"] else None,
                    "train_s": round(time.perf_counter() - t0, 2), "config": dataclasses.asdict(config),
                    "backbone_source": backbone_ckpt.name}
            save_checkpoint(head_path, "pfe", pfe_cfg, model, pfe_spec, extra=info)
        head = model.head
        # Each head has its own sigma scale, so raw MLS from different heads are not comparable and a
        # threshold chosen on the other folds misfits. Calibrate every head on its *validation* people
        # only: score = (MLS - best validation threshold) / std of validation scores.
        vp = make_validation_pairs(va_lab, config.max_val_genuine_per_person, config.seed + k + 1)
        vs = head_sigma_sq(head, fmaps[va_idx])
        vmu = mu[va_idx]
        vsc = mls_scores(vmu[vp[:, 0]], vs[vp[:, 0]], vmu[vp[:, 1]], vs[vp[:, 1]])
        v_thr, v_acc = best_threshold(vsc, vp[:, 2].astype(bool))
        v_std = float(np.std(vsc)) or 1.0
        sel = np.flatnonzero(folds == k)
        rows_k = np.unique(np.concatenate([i1[sel], i2[sel]]))
        sig = np.zeros((len(needed), mu.shape[1]), np.float32)
        sig[rows_k] = head_sigma_sq(head, fmaps[rows_k])
        mls_raw[sel] = mls_scores(mu[i1[sel]], sig[i1[sel]], mu[i2[sel]], sig[i2[sel]])
        mls[sel] = (mls_raw[sel] - v_thr) / v_std
        info.update(calibration={"val_threshold": v_thr, "val_score_std": v_std, "val_accuracy": v_acc,
                                 "val_pairs": len(vp)},
                    test_mean_log_sigma_sq=float(np.log(sig[rows_k]).mean()))
        fold_info.append(info)
        if progress:
            print(f"fold {k}: {'reused' if info.get('reused') else 'trained'} head; "
                  f"best step {info.get('best_step')}, val {info.get('val_best')}", flush=True)
    t_done = time.perf_counter()
    cos = cosine_scores(mu[i1], mu[i2])
    results = {
        "backbone_ckpt": str(backbone_ckpt), "landmarks": str(landmarks), "pairs": len(pairs),
        "images": len(needed), "cosine": _ten_fold(cos, same, folds), "mls": _ten_fold(mls, same, folds),
        "mls_uncalibrated": _ten_fold(mls_raw, same, folds),
        "folds": fold_info, "config": dataclasses.asdict(config),
        "timing_s": {**{k: round(v, 2) for k, v in timing.items()},
                     "heads": round(t_done - t_train, 2), "total": round(t_done - t_start, 2)},
    }
    results["mls_minus_cosine"] = results["mls"]["accuracy"] - results["cosine"]["accuracy"]
    write_json(out_dir / "pfe_results.json", results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m faceembed.training.train_pfe BACKBONE.pt LFW_ROOT LANDMARKS OUT_DIR [--key value...]``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    for name in ("backbone_ckpt", "lfw_root", "landmarks", "out_dir"):
        ap.add_argument(name)
    for f in dataclasses.fields(PFETrainConfig):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = vars(ap.parse_args(argv))
    cfg = PFETrainConfig(**{f.name: a[f.name] for f in dataclasses.fields(PFETrainConfig)})
    res = train_pfe_crossfold(a["backbone_ckpt"], a["lfw_root"], a["landmarks"], a["out_dir"], cfg)
    print(json.dumps({k: res[k] for k in ("cosine", "mls", "mls_minus_cosine", "timing_s")}, indent=1))


if __name__ == "__main__":
    main()
