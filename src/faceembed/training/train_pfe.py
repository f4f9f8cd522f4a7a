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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceembed.errors import FaceembedError
from faceembed.files import file_sha256, write_json, write_with
from faceembed.models.card import ModelCard
from faceembed.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from faceembed.models.pfe_head import PFEModel
from faceembed.training.pfe_fit import (
    PFETrainConfig,
    deterministic_torch,
    head_sigma_sq,
    make_validation_pairs,
    train_head,
)


def _backbone_input(images: np.ndarray, card: ModelCard | None) -> torch.Tensor:
    """Aligned uint8 RGB faces as the backbone module's NCHW input, preprocessed as the backbone's card says."""
    from faceembed.data.preprocess import preprocess

    card = card or _default_card()
    x = torch.from_numpy(preprocess(np.ascontiguousarray(images), card))
    return x.permute(0, 3, 1, 2) if card.layout == "NHWC" else x


def _default_card() -> ModelCard:
    from faceembed.batch.tobin import default_face_card

    return default_face_card()


def extract_feature_maps(backbone: nn.Module, images: np.ndarray, batch_size: int = 64,
                         progress: bool = True, card: ModelCard | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Aligned uint8 NHWC faces -> (feature maps float16 [N, C*H*W], mu float32 [N, D] L2-normalised), the faces
    preprocessed per the backbone's ``card`` (default: 112x96 ``(x - 127.5) / 128``)."""
    backbone.eval()
    n = len(images)
    fmaps: np.ndarray | None = None
    mu: np.ndarray | None = None
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            fm = backbone.feature_map(_backbone_input(images[start:start + batch_size], card))
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


def cached_feature_maps(cache_dir: Path, backbone_ckpt: Path, backbone: nn.Module, relpaths: list[str],
                        load_images: Any, extra_key: str = "", progress: bool = True,
                        card: ModelCard | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Feature maps and mu for ``relpaths``, cached under a key of (checkpoint hash, image list, extra_key).

    ``load_images()`` returns the aligned uint8 images in ``relpaths`` order; it is only called on a miss.
    """
    key = hashlib.sha256(("\n".join([file_sha256(backbone_ckpt), extra_key, *relpaths])).encode())
    path = Path(cache_dir) / f"fmaps_{key.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["fmaps"], z["mu"], {"cached": 1.0}
    t0 = time.perf_counter()
    images = load_images()
    t1 = time.perf_counter()
    fmaps, mu = extract_feature_maps(backbone, images, progress=progress, card=card)
    t2 = time.perf_counter()
    write_with(path, lambda tmp: np.savez(tmp, fmaps=fmaps, mu=mu))
    return fmaps, mu, {"cached": 0.0, "align_s": t1 - t0, "extract_s": t2 - t1}


def _ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """The standard protocol (threshold chosen on the other 9 folds): {accuracy, std, per_fold}."""
    from faceembed.evaluation.verification import ten_fold_accuracy

    res = ten_fold_accuracy(scores, same, folds)
    return {"accuracy": res["mean"], "std": res["std"], "per_fold": res["per_fold"]}


def _pfe_config(arch: str, config: dict[str, Any], head_in: int, bn_momentum: float, heads: int) -> dict[str, Any]:
    return {"backbone": arch, "backbone_config": dict(config), "head_in_features": head_in,
            "bn_momentum": bn_momentum, "heads": heads}


@dataclasses.dataclass
class LFWFeatures:
    """Frozen-backbone features of every LFW image the cross-fold protocol needs, and its bookkeeping."""

    fmaps: np.ndarray  # [N, C*H*W] float16 feature maps
    mu: np.ndarray  # [N, D] L2-normalised embeddings
    relpaths: list[str]  # row -> image
    by_person: dict[str, list[str]]
    multi: list[str]  # people with >= 2 images
    pairs: list  # View 2 pairs
    people_of_fold: list[set[str]]
    timing: dict[str, float]
    fmaps_mirror: np.ndarray | None = None  # the same rows' horizontally mirrored images (flip_augment)
    mu_mirror: np.ndarray | None = None

    def mirrored(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Mirror-image (feature maps, mu) of rows ``idx``, or None when they were not extracted."""
        if self.fmaps_mirror is None or self.mu_mirror is None:
            return None
        return self.fmaps_mirror[idx], self.mu_mirror[idx]

    @property
    def row(self) -> dict[str, int]:
        return {rp: i for i, rp in enumerate(self.relpaths)}

    def rows_of(self, people: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of ``people``'s images and a label per row (index into ``people``)."""
        row = self.row
        idx = [row[rp] for p in people for rp in self.by_person[p]]
        lab = [j for j, p in enumerate(people) for _ in self.by_person[p]]
        return np.asarray(idx), np.asarray(lab)

    def fold_split(self, k: int, config: PFETrainConfig) -> tuple[list[str], list[str]]:
        """(fit people, validation people) of fold ``k``'s head: people with >= 2 images in no pair of fold
        ``k``; a seeded ``val_fraction`` of them validate."""
        train_people = [p for p in self.multi if p not in self.people_of_fold[k]]
        perm = np.random.default_rng(config.seed + k).permutation(len(train_people))
        n_val = max(2, int(round(config.val_fraction * len(train_people))))
        val_people = sorted(train_people[i] for i in perm[:n_val])
        fit_people = [p for p in train_people if p not in set(val_people)]
        return fit_people, val_people


def lfw_features(backbone_ckpt: str | Path, lfw_root: str | Path, landmarks: str | Path, cache_dir: str | Path,
                 workers: int = 2, progress: bool = True, mirror: bool = False) -> LFWFeatures:
    """Align (in memory), run the frozen backbone once and cache the features of the images that the
    cross-fold protocol needs: every image of people with >= 2 images, and every pair image; with ``mirror``
    also of their horizontal mirror images (for ``flip_augment``)."""
    from faceembed.data.lfw import fold_people, list_lfw_images, read_landmarks, read_pairs
    from faceembed.faces.align_files import align_images_in_memory
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    backbone_ckpt, lfw_root = resolve_model(backbone_ckpt), Path(lfw_root)
    backbone, spec, _ = load_checkpoint(backbone_ckpt)
    card = read_card(backbone_ckpt)
    pairs = read_pairs(lfw_root / "pairs.txt")
    by_person: dict[str, list[str]] = {}
    for rp in list_lfw_images(lfw_root / "images"):
        by_person.setdefault(rp.split("/")[0], []).append(rp)
    multi = sorted(p for p, v in by_person.items() if len(v) >= 2)
    needed = sorted({rp for p in multi for rp in by_person[p]}
                    | {rp for pr in pairs for rp in (pr.relpath1, pr.relpath2)})
    marks = read_landmarks(landmarks)
    size = (card.height, card.width)

    aligned: list[np.ndarray] = []  # aligned once even when both the images and their mirrors miss the cache

    def load_images() -> np.ndarray:
        if not aligned:
            aligned.append(align_images_in_memory(lfw_root / "images", marks, needed, size=size, workers=workers,
                                                  template=card.template))
        return aligned[0]

    key = f"{Path(landmarks).name}:{file_sha256(Path(landmarks))}:{card.to_json()}"
    fmaps, mu, timing = cached_feature_maps(Path(cache_dir), backbone_ckpt, backbone, needed, load_images,
                                            extra_key=key, progress=progress, card=card)
    feats = LFWFeatures(fmaps, mu, needed, by_person, multi, pairs, fold_people(pairs), timing)
    if mirror:
        feats.fmaps_mirror, feats.mu_mirror, mirror_timing = cached_feature_maps(
            Path(cache_dir), backbone_ckpt, backbone, needed, lambda: np.ascontiguousarray(load_images()[:, :, ::-1]),
            extra_key=key + ":mirror", progress=progress, card=card)
        feats.timing.update({f"mirror_{k}": v for k, v in mirror_timing.items()})
    return feats


def _calibration(head, feats: LFWFeatures, va_idx: np.ndarray, va_lab: np.ndarray, max_genuine: int,
                 seed: int) -> dict[str, Any]:
    """Each head has its own sigma scale, so raw MLS from different heads are not comparable and a threshold
    chosen on the other folds misfits. Fit a logistic (Platt) calibration of the head's MLS on its *validation*
    people only: calibrated = a * MLS + b = log-odds of "same person".

    Chosen on validation data only: with each head's validation people split in halves (calibration fitted on
    one, the 10-fold protocol run over the heads' other halves), logistic calibration gave 0.9912 against 0.9904
    uncalibrated and 0.9901 for (MLS - best threshold) / std (two-head models; cosine 0.9876).
    """
    from faceembed.evaluation.scores import fit_logistic_calibration, mls_scores
    from faceembed.evaluation.verification import best_threshold

    pairs = make_validation_pairs(va_lab, max_genuine, seed)
    vs = head_sigma_sq(head, feats.fmaps[va_idx])
    vmu = feats.mu[va_idx]
    i, j, same = pairs[:, 0], pairs[:, 1], pairs[:, 2].astype(bool)
    scores = mls_scores(vmu[i], vs[i], vmu[j], vs[j])
    a, b = fit_logistic_calibration(scores, same)
    return {"method": "logistic", "a": a, "b": b, "val_accuracy": best_threshold(scores, same)[1],
            "val_pairs": len(pairs)}


def _head_card(card: ModelCard, head, feats: LFWFeatures, va_idx: np.ndarray, k: int) -> ModelCard:
    """Fold ``k``'s head's card with its face-quality reference, measured on the faces of the head's
    *validation* people only (training people held out for early stopping; never fold ``k``'s test people)."""
    from faceembed.evaluation.rejection import quality_reference

    protocol = (f"LFW View 2 fold {k} head: u_ref and reject fractions on the {len(va_idx)} faces of its "
                "validation people (held-out training people, not the test fold)")
    return card.replace(quality=quality_reference(head_sigma_sq(head, feats.fmaps[va_idx]), protocol))


def _reusable_head(path: Path, made_by: dict[str, Any], overwrite: bool) -> bool:
    """True when the head at ``path`` was made from ``made_by``; a head made otherwise is refused in one line
    naming what differs, or, with ``overwrite``, retrained (False)."""
    from faceembed.fingerprint import differences

    old = read_checkpoint(path)["extra"].get("made_by")
    if old == made_by:
        return True
    if overwrite:
        return False
    what = ", ".join(differences(old, made_by)) if isinstance(old, dict) else "no record of what made it"
    raise FaceembedError(f"this head was trained otherwise ({what}); rerun with --overwrite to train again, or "
                         "use another --out", path)


def _claim_out(out_dir: Path, made_by: dict[str, Any], overwrite: bool) -> None:
    """Claim ``out_dir`` for this training (:func:`faceembed.fingerprint.claim_folder`): a folder of another
    backbone, landmarks, pairs or config is refused in one line (or emptied with ``overwrite``), so its heads and
    feature cache never mix with this run's. A folder of an earlier version (heads, no record) whose every head
    was made from ``made_by`` is adopted."""
    from faceembed.fingerprint import FORMAT, RECORD, VERSION, claim_folder, read_record

    record = {"command": "train-pfe", **made_by}
    heads = sorted((out_dir / "heads").glob("fold_*.pt")) if out_dir.is_dir() else []
    if heads and read_record(out_dir) is None and not overwrite and all(
            _reusable_head(h, made_by, False) for h in heads):
        write_json(out_dir / RECORD, {"format": FORMAT, "version": VERSION, "made_by": record})
    claim_folder(out_dir, record, overwrite)


def train_pfe_crossfold(backbone_ckpt: str | Path, lfw_root: str | Path, landmarks: str | Path,
                        out_dir: str | Path, config: PFETrainConfig | None = None,
                        progress: bool = True, workers: int = 2, overwrite: bool = False) -> dict[str, Any]:
    """:func:`_train_pfe_crossfold` with ``config.threads`` intra-op threads and deterministic algorithms: the same
    command gives the same heads and figures on one machine."""
    config = config or PFETrainConfig()
    with deterministic_torch(config.threads):
        return _train_pfe_crossfold(backbone_ckpt, lfw_root, landmarks, out_dir, config, progress, workers, overwrite)


def _train_pfe_crossfold(backbone_ckpt: str | Path, lfw_root: str | Path, landmarks: str | Path,
                         out_dir: str | Path, config: PFETrainConfig, progress: bool, workers: int,
                         overwrite: bool) -> dict[str, Any]:
    """Train one head per LFW View-2 fold on the people outside that fold; score each fold with its head.

    ``lfw_root`` holds ``images/`` and ``pairs.txt``; ``backbone_ckpt`` is a faceembed checkpoint (convert
    foreign ones with ``faceembed import``). Writes ``out_dir/heads/fold_KK.pt``
    (arch ``pfe``: backbone + head, with the head's validation calibration in its extra metadata; a fold
    whose file exists and was made from the same backbone, landmarks, pairs and config is reused, not retrained;
    one made otherwise is refused unless ``overwrite``) and ``out_dir/pfe_results.json``: cosine and MLS 10-fold
    accuracy on the same single-image mu.
    """
    from faceembed.evaluation.scores import apply_calibration, cosine_scores, mls_scores
    from faceembed.fingerprint import file_identity
    from faceembed.models.card import OutputSpec
    from faceembed.models.card_io import read_card
    from faceembed.models.registry import resolve_model

    backbone_ckpt, out_dir = resolve_model(backbone_ckpt), Path(out_dir)
    t_start = time.perf_counter()
    payload = read_checkpoint(backbone_ckpt)
    arch, bconfig = payload["arch"], payload["config"]
    backbone, spec, _ = load_checkpoint(backbone_ckpt)
    del payload
    made_by = json.loads(json.dumps({"backbone": file_identity(backbone_ckpt), "landmarks": file_identity(landmarks),
                                     "pairs": file_identity(Path(lfw_root) / "pairs.txt"),
                                     "config": dataclasses.asdict(config)}))
    _claim_out(out_dir, made_by, overwrite)  # before any work: another run's folder is refused or emptied
    feats = lfw_features(backbone_ckpt, lfw_root, landmarks, out_dir / "cache", workers, progress,
                         mirror=config.flip_augment)
    fmaps, mu, pairs, row = feats.fmaps, feats.mu, feats.pairs, feats.row
    i1 = np.array([row[p.relpath1] for p in pairs])
    i2 = np.array([row[p.relpath2] for p in pairs])
    same = np.array([p.same for p in pairs], bool)
    folds = np.array([p.fold for p in pairs])
    pfe_cfg = _pfe_config(arch, bconfig, fmaps.shape[1], config.bn_momentum, config.heads)
    pfe_spec = dataclasses.replace(spec, output_names=PFEModel.output_names)
    bcard = read_card(backbone_ckpt)  # the heads' models take the backbone's input: its card, PFE's outputs
    pfe_card = bcard.replace(outputs=(OutputSpec("mu", "mu"), OutputSpec("sigma_sq", "sigma_sq")), similarity="mls",
                             thresholds=None, arch="pfe", name=f"pfe-{bcard.name or arch}")
    fold_info: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    mls, mls_raw = np.zeros(len(pairs)), np.zeros(len(pairs))
    for k in range(len(feats.people_of_fold)):
        head_path = out_dir / "heads" / f"fold_{k:02d}.pt"
        fit_people, val_people = feats.fold_split(k, config)
        va_idx, va_lab = feats.rows_of(val_people)
        if head_path.is_file() and _reusable_head(head_path, made_by, overwrite):
            model, _, extra = load_checkpoint(head_path, expect_arch="pfe")
            info = {**extra, "reused": True}
        else:
            tr_idx, tr_lab = feats.rows_of(fit_people)
            t0 = time.perf_counter()
            model = PFEModel(**pfe_cfg)
            model.backbone.load_state_dict(backbone.state_dict())
            members = [model.head] if config.heads == 1 else list(model.head.heads)
            hists = []
            for j, member in enumerate(members):  # each member: its own seed and early stopping
                state, hist = train_head(fmaps[tr_idx], tr_lab, mu[tr_idx], config,
                                         val=(fmaps[va_idx], va_lab, mu[va_idx]), seed=config.seed + k + 1000 * j,
                                         mirrored=feats.mirrored(tr_idx))
                member.load_state_dict(state)
                hists.append(hist)
            model.eval()
            info = {"fold": k, "train_people": len(fit_people), "train_images": int(len(tr_idx)),
                    "val_people": len(val_people), "val_images": int(len(va_idx)),
                    "best_step": [h["best_step"] for h in hists], "steps": [h["steps"] for h in hists],
                    "val_metric": config.val_metric, "val_best": [h["best_metric"] for h in hists],
                    "val_cosine": hists[0].get("val_cosine"),
                    "train_s": round(time.perf_counter() - t0, 2), "config": dataclasses.asdict(config),
                    "backbone_source": backbone_ckpt.name, "made_by": made_by,
                    "card": _head_card(pfe_card, model.head, feats, va_idx, k).to_dict()}
            info["calibration"] = _calibration(model.head, feats, va_idx, va_lab, config.max_val_genuine_per_person,
                                               config.seed + k + 1)
            save_checkpoint(head_path, "pfe", pfe_cfg, model, pfe_spec, extra=info)
        if "quality" not in info.get("card", {}):  # a head saved by an earlier version: add its quality reference
            from faceembed.models.card_io import write_card

            info["card"] = _head_card(pfe_card, model.head, feats, va_idx, k).to_dict()
            write_card(head_path, ModelCard.from_dict(info["card"]))
        if info.get("calibration", {}).get("method") != "logistic":  # heads saved by an earlier version
            info["calibration"] = _calibration(model.head, feats, va_idx, va_lab, config.max_val_genuine_per_person,
                                               config.seed + k + 1)
        cal = info["calibration"]
        sel = np.flatnonzero(folds == k)
        rows_k = np.unique(np.concatenate([i1[sel], i2[sel]]))
        sig = np.zeros((len(feats.relpaths), mu.shape[1]), np.float32)
        sig[rows_k] = head_sigma_sq(model.head, fmaps[rows_k])
        mls_raw[sel] = mls_scores(mu[i1[sel]], sig[i1[sel]], mu[i2[sel]], sig[i2[sel]])
        mls[sel] = apply_calibration(mls_raw[sel], cal)
        info["test_mean_log_sigma_sq"] = float(np.log(sig[rows_k]).mean())
        fold_info.append(info)
        if progress:
            print(f"fold {k}: {'reused' if info.get('reused') else 'trained'} head; "
                  f"best step {info.get('best_step')}, val {info.get('val_best')}", flush=True)
    t_done = time.perf_counter()
    cos = cosine_scores(mu[i1], mu[i2])
    results = {
        "backbone_ckpt": str(backbone_ckpt), "landmarks": str(landmarks), "pairs": len(pairs),
        "images": len(feats.relpaths), "cosine": _ten_fold(cos, same, folds), "mls": _ten_fold(mls, same, folds),
        "mls_uncalibrated": _ten_fold(mls_raw, same, folds),
        "folds": fold_info, "config": dataclasses.asdict(config),
        "timing_s": {**{k: round(v, 2) for k, v in feats.timing.items()},
                     "heads": round(t_done - t_train, 2), "total": round(t_done - t_start, 2)},
    }
    results["mls_minus_cosine"] = results["mls"]["accuracy"] - results["cosine"]["accuracy"]
    write_json(out_dir / "pfe_results.json", results)
    return results
