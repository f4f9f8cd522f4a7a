"""Losses: margin softmax heads (A-Softmax, CosFace, ArcFace, plain softmax) and PFE's mutual likelihood.

References: Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017 (A-Softmax);
Wang et al. 2018 (CosFace / AM-Softmax); Deng et al. 2019 (ArcFace); Shi & Jain, "Probabilistic Face
Embeddings", ICCV 2019 (MLS).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("asoftmax", "softmax", "cosface", "arcface")
_DEFAULTS = {"asoftmax": {"m": 4}, "cosface": {"m": 0.35, "s": 30.0}, "arcface": {"m": 0.5, "s": 30.0},
             "softmax": {}}


def cos_m_theta(cos_theta: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m theta) as the Chebyshev polynomial T_m(cos theta), m in 1..4 (SphereFace eq. 7's cos(m theta))."""
    c = cos_theta
    if m == 1:
        return c
    if m == 2:
        return 2 * c**2 - 1
    if m == 3:
        return 4 * c**3 - 3 * c
    if m == 4:
        return 8 * c**4 - 8 * c**2 + 1
    raise ValueError(f"A-Softmax margin m must be 1, 2, 3 or 4, not {m}")


def psi(cos_theta: torch.Tensor, m: int) -> torch.Tensor:
    """A-Softmax's monotonic target function (SphereFace eq. 6-7):
    psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m], k = 0..m-1.

    k is piecewise constant (no gradient); the gradient flows through the Chebyshev polynomial.
    """
    c = cos_theta.clamp(-1.0, 1.0)
    with torch.no_grad():
        k = torch.floor(m * torch.acos(c) / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * cos_m_theta(c, m) - 2.0 * k


class MarginHead(nn.Module):
    """Class weights and the margin of a classification loss; ``F.cross_entropy(head(x, y), y)`` trains.

    ``forward(x, labels)`` gives training logits (margin on the target class); ``logits(x)`` gives
    inference logits without margin. A-Softmax anneals with lambda (SphereFace's released code):
    target = (lambda ||x|| cos theta + ||x|| psi(theta)) / (1 + lambda),
    lambda = max(lambda_min, lambda_base (1 + gamma t)^(-power)), t = training iterations so far (a buffer,
    so a resumed run continues exactly).
    """

    def __init__(self, in_features: int, num_classes: int, loss: str = "asoftmax", m: float | None = None,
                 s: float | None = None, lambda_base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                 lambda_min: float = 5.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
        self.loss = loss
        self.m = _DEFAULTS[loss].get("m") if m is None else m
        self.s = _DEFAULTS[loss].get("s") if s is None else s
        if loss == "asoftmax":
            if self.m not in (1, 2, 3, 4):
                raise ValueError(f"A-Softmax margin m must be 1, 2, 3 or 4, not {self.m}")
            self.m = int(self.m)
        self.lambda_base, self.gamma, self.power, self.lambda_min = lambda_base, gamma, power, lambda_min
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if loss == "softmax" else None
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        """The A-Softmax annealing weight at the current iteration."""
        t = float(self.iteration)
        return max(self.lambda_min, self.lambda_base * (1.0 + self.gamma * t) ** (-self.power))

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        """cos(theta) between each feature and each (L2-normalised, bias-free) class weight."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits (no margin): Wx+b, ||x|| cos theta (A-Softmax) or s cos theta."""
        if self.loss == "softmax":
            return F.linear(x, self.weight, self.bias)
        if self.loss == "asoftmax":
            return F.linear(x, F.normalize(self.weight, dim=1))
        return self.s * self.cosine(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.loss == "softmax":
            return self.logits(x)
        cos = self.cosine(x)
        onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        cos_t = (cos * onehot).sum(1, keepdim=True)
        if self.loss == "asoftmax":
            lam = self.current_lambda()
            if self.training:
                self.iteration += 1
            norm = x.norm(dim=1, keepdim=True)
            target = (lam * cos_t + psi(cos_t, self.m)) / (1.0 + lam)
            return norm * (cos + onehot * (target - cos_t))
        if self.loss == "cosface":
            return self.s * (cos - onehot * self.m)
        # ArcFace: cos(theta + m); past theta = pi - m (where cos(theta+m) stops decreasing) insightface
        # falls back to cos theta - m sin(m) so the target stays monotonic.
        sin_t = torch.sqrt((1.0 - cos_t**2).clamp_min(1e-12))
        phi = cos_t * math.cos(self.m) - sin_t * math.sin(self.m)
        phi = torch.where(cos_t > math.cos(math.pi - self.m), phi, cos_t - math.sin(math.pi - self.m) * self.m)
        return self.s * (cos + onehot * (phi - cos_t))


def pfe_loss(mu: torch.Tensor, log_sigma_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PFE's training loss over the genuine pairs (i < j, same label) of a batch, as in the paper's code:
    mean of sum_d [(mu_i - mu_j)^2 / (s_i + s_j) + log(s_i + s_j)] = -2 MLS - D log(2 pi), so it has the
    minimiser of mean -MLS (PFE eq. 5) and the paper's learning rate applies unchanged."""
    sigma_sq = torch.exp(log_sigma_sq)
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    genuine = labels[i] == labels[j]
    if not bool(genuine.any()):
        raise ValueError("pfe_loss needs at least one genuine pair in the batch")
    i, j = i[genuine], j[genuine]
    s = sigma_sq[i] + sigma_sq[j]
    return (((mu[i] - mu[j]) ** 2) / s + torch.log(s)).sum(-1).mean()
