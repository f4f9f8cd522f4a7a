"""Improved ResNets (IResNet-18/34/50/100) of insightface's ``arcface_torch``, for 3x112x112 faces.

Module and parameter names follow ``arcface_torch/backbones/iresnet.py`` (``conv1``, ``bn1``, ``prelu``,
``layerN.M.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}``, ``bn2``, ``fc``, ``features``), so the
published ``.pth`` state dicts load with ``strict=True``.

Input: NCHW float, RGB, ``(pixel - 127.5) / 127.5``. Spatial path 112 -> 56 -> 28 -> 14 -> 7 (the stem keeps
112; each stage's first block halves it).
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_CHANNELS = 512
FEATURE_HW = (7, 7)
STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(inp: int, oup: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN - 3x3 conv - BN - PReLU - 3x3 conv (strided) - BN, plus the (projected) shortcut; no final activation."""

    def __init__(self, inp: int, oup: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp, eps=1e-5)
        self.conv1 = _conv3x3(inp, oup)
        self.bn2 = nn.BatchNorm2d(oup, eps=1e-5)
        self.prelu = nn.PReLU(oup)
        self.conv2 = _conv3x3(oup, oup, stride)
        self.bn3 = nn.BatchNorm2d(oup, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != oup:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, oup, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(oup, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet: ``forward(x) -> (embedding,)``, an un-normalised ``embedding_size``-d embedding.

    ``forward_features(x)`` is the [N,512,7,7] output of ``layer4`` (the last residual stage), before ``bn2``,
    dropout, flatten, ``fc`` and the ``features`` BatchNorm1d;
    ``forward(x) == (embed_from_feature_map(forward_features(x)),)``. ``feature_map`` is an alias, named like
    the other backbones'.
    """

    output_names = ("embedding",)

    def __init__(self, depths: tuple[int, int, int, int], embedding_size: int = 512, dropout: float = 0.0):
        super().__init__()
        self.embedding_size = embedding_size
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        inp = STAGE_WIDTHS[0]
        for i, (width, depth) in enumerate(zip(STAGE_WIDTHS, depths, strict=True), start=1):
            setattr(self, f"layer{i}", self._stage(inp, width, depth))
            inp = width
        self.bn2 = nn.BatchNorm2d(FEATURE_CHANNELS, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(FEATURE_CHANNELS * FEATURE_HW[0] * FEATURE_HW[1], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        self._init_weights()

    @staticmethod
    def _stage(inp: int, width: int, depth: int) -> nn.Sequential:
        """``depth`` blocks; the first halves the resolution (and widens the channels)."""
        return nn.Sequential(IBasicBlock(inp, width, stride=2), *(IBasicBlock(width, width) for _ in range(depth - 1)))

    def _init_weights(self) -> None:
        """arcface_torch's initialisation: N(0, 0.1) convs, unit BNs, and a frozen unit scale on ``features``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of ``forward_features``'s output for one 112x112 image."""
        return (FEATURE_CHANNELS, *FEATURE_HW)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,112,112] -> [N,512,7,7]: the output of ``layer4`` (no BN applied after its last block)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of ``forward_features``."""
        return self.forward_features(x)

    def embed_from_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """[N,512,7,7] -> [N,embedding_size] through ``bn2``, dropout, ``fc`` and ``features``."""
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(fmap), 1))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.embed_from_feature_map(self.forward_features(x)),)


def iresnet18(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet-18: (2, 2, 2, 2) blocks, about 24 M parameters."""
    return IResNet(DEPTHS["iresnet18"], embedding_size, dropout)


def iresnet34(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet-34: (3, 4, 6, 3) blocks, about 34 M parameters."""
    return IResNet(DEPTHS["iresnet34"], embedding_size, dropout)


def iresnet50(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet-50: (3, 4, 14, 3) blocks, about 44 M parameters."""
    return IResNet(DEPTHS["iresnet50"], embedding_size, dropout)


def iresnet100(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet-100: (3, 13, 30, 3) blocks, about 65 M parameters."""
    return IResNet(DEPTHS["iresnet100"], embedding_size, dropout)
