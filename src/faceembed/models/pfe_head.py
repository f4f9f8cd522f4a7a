"""Probabilistic Face Embeddings (Shi & Jain, ICCV 2019): the uncertainty head and the full PFE model.

The head follows the paper's code (``uncertainty_module.py``): flatten -> FC (no bias) -> BN -> ReLU ->
FC (no bias) -> BN without affine -> one scalar scale ``gamma`` and shift ``beta`` shared by every dimension
(initialised to 1e-4 and -7) -> ``log(1e-6 + exp(.))``. Its output is log sigma^2.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# TF-slim batch_norm defaults used by the paper's code: decay 0.995 (torch momentum 0.005), epsilon 1e-3.
BN_EPS = 1e-3
GAMMA_INIT = 1e-4
BETA_INIT = -7.0
LOG_EPS = math.log(1e-6)


class UncertaintyHead(nn.Module):
    """``forward(features [N, in_features]) -> log_sigma_sq [N, embedding_size]``.

    ``bn_momentum`` is PyTorch's convention (1 - TF decay); the default 0.01 lets the running statistics
    settle within the few hundred steps the head trains for on small data sets.
    """

    output_names = ("log_sigma_sq",)

    def __init__(self, in_features: int, embedding_size: int, bn_momentum: float = 0.01):
        super().__init__()
        self.in_features = in_features
        self.embedding_size = embedding_size
        self.fc1 = nn.Linear(in_features, embedding_size, bias=False)
        self.bn1 = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=bn_momentum)
        self.fc2 = nn.Linear(embedding_size, embedding_size, bias=False)
        self.bn2 = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=bn_momentum, affine=False)
        self.gamma = nn.Parameter(torch.tensor(GAMMA_INIT))
        self.beta = nn.Parameter(torch.tensor(BETA_INIT))
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.xavier_uniform_(self.fc2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.bn1(self.fc1(x)))
        x = self.bn2(self.fc2(x))
        log_sigma_sq = self.gamma * x + self.beta
        # log(1e-6 + exp(z)) written stably (equal to the paper's expression, finite for any z).
        # max(z, c) + log1p(exp(-|z - c|)) with c = log(1e-6): plain ONNX ops, no overflow.
        return torch.clamp(log_sigma_sq, min=LOG_EPS) + torch.log1p(torch.exp(-torch.abs(log_sigma_sq - LOG_EPS)))


class HeadEnsemble(nn.Module):
    """``heads`` independently trained uncertainty heads on the same input; log sigma^2 is their mean (the
    geometric mean of sigma^2). Averaging a few heads trained from different seeds lowers the variance of
    sigma^2 that a head fit on a small data set has."""

    output_names = ("log_sigma_sq",)

    def __init__(self, in_features: int, embedding_size: int, heads: int = 2, bn_momentum: float = 0.01):
        super().__init__()
        self.heads = nn.ModuleList(UncertaintyHead(in_features, embedding_size, bn_momentum) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.heads]).mean(0)


class PFEModel(nn.Module):
    """Backbone + uncertainty head: ``forward(x) -> (mu, sigma_sq)``.

    ``mu`` is the backbone embedding L2-normalised; ``sigma_sq = exp(head(flatten(feature_map(x))))``; with
    ``heads > 1`` the head is a ``HeadEnsemble``.
    The backbone is built by registry name, and its weights live in this module's state dict (``backbone.*``),
    the head's under ``head.*``: one checkpoint holds both. Constructor kwargs are JSON-able.
    """

    output_names = ("mu", "sigma_sq")

    def __init__(self, backbone: str = "mobilefacenet", backbone_config: dict[str, Any] | None = None,
                 head_in_features: int | None = None, bn_momentum: float = 0.01, heads: int = 1):
        super().__init__()
        from faceembed.models import build  # late import: the registry imports this module lazily

        self.backbone_name = backbone
        self.backbone = build(backbone, **(backbone_config or {}))
        if head_in_features is None:
            c, h, w = self.backbone.feature_map_shape
            head_in_features = c * h * w
        size = self.backbone.embedding_size
        self.head = (UncertaintyHead(head_in_features, size, bn_momentum=bn_momentum) if heads == 1
                     else HeadEnsemble(head_in_features, size, heads, bn_momentum))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.backbone.feature_map(x)
        mu = F.normalize(self.backbone.embed_from_feature_map(fmap), dim=1)
        sigma_sq = torch.exp(self.head(torch.flatten(fmap, 1)))
        return mu, sigma_sq
