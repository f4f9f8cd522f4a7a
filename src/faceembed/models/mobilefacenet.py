"""MobileFaceNet (Chen et al., 2018) for 3x112x96 faces, in the common PyTorch layout.

Module and parameter names match the widely used PyTorch port (``conv1``, ``dw_conv1``, ``blocks.N.conv.M``,
``conv2``, ``linear7``, ``linear1``), so its published state dicts load with ``strict=True``.

Input: NCHW float, RGB, ``(pixel - 127.5) / 128``. Spatial path 112x96 -> 56x48 -> 28x24 -> 14x12 -> 7x6.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 1.
BOTTLENECK_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)

FEATURE_CHANNELS = 512
FEATURE_HW = (7, 6)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand - BN - PReLU - 3x3 depthwise - BN - PReLU - 1x1 project - BN."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int):
        super().__init__()
        hidden = inp * expansion
        self.connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.PReLU(hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.connect else self.conv(x)


class ConvBlock(nn.Module):
    """Conv (optionally depthwise) - BN - PReLU (omitted when ``linear``)."""

    def __init__(self, inp: int, oup: int, k: int | tuple[int, int], s: int, p: int,
                 dw: bool = False, linear: bool = False):
        super().__init__()
        self.linear = linear
        self.conv = nn.Conv2d(inp, oup, k, s, p, groups=inp if dw else 1, bias=False)
        self.bn = nn.BatchNorm2d(oup)
        if not linear:
            self.prelu = nn.PReLU(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.linear else self.prelu(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet: ``forward(x) -> (embedding,)`` with an un-normalised ``embedding_size``-d embedding.

    ``feature_map(x)`` is the 512x7x6 output of the last 1x1 conv (``conv2``), before the global depthwise
    conv (``linear7``) and the linear 1x1 (``linear1``); ``forward == embed_from_feature_map(feature_map(x))``.
    """

    output_names = ("embedding",)

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.embedding_size = embedding_size
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvBlock(64, 64, 3, 1, 1, dw=True)
        layers: list[nn.Module] = []
        inplanes = 64
        for t, c, n, s in BOTTLENECK_SETTING:
            for i in range(n):
                layers.append(Bottleneck(inplanes, c, s if i == 0 else 1, t))
                inplanes = c
        self.blocks = nn.Sequential(*layers)
        self.conv2 = ConvBlock(inplanes, FEATURE_CHANNELS, 1, 1, 0)
        self.linear7 = ConvBlock(FEATURE_CHANNELS, FEATURE_CHANNELS, FEATURE_HW, 1, 0, dw=True, linear=True)
        self.linear1 = ConvBlock(FEATURE_CHANNELS, embedding_size, 1, 1, 0, linear=True)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of ``feature_map``'s output for one 112x96 image."""
        return (FEATURE_CHANNELS, *FEATURE_HW)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,112,96] -> [N,512,7,6]: the output of ``conv2`` (BN + PReLU applied)."""
        return self.conv2(self.blocks(self.dw_conv1(self.conv1(x))))

    def embed_from_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """[N,512,7,6] -> [N,embedding_size] through the GDC (``linear7``) and ``linear1``."""
        return torch.flatten(self.linear1(self.linear7(fmap)), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.embed_from_feature_map(self.feature_map(x)),)
