"""SphereFace face networks (Liu et al., 2017): sphere20 and sphere64 for 3x112x96 faces.

Four stages; each starts with a 3x3 stride-2 convolution + PReLU and continues with residual units
``x + PReLU(conv3x3(PReLU(conv3x3(x))))``. Stage channels 64, 128, 256, 512; units per stage 1,2,4,1
(sphere20) or 3,8,16,3 (sphere64). 112x96 -> 512x7x6 feature map -> ``fc5`` embedding.

Layer names follow the Caffe prototxt and its PyTorch port (``conv{stage}_{k}``, ``relu{stage}_{k}``,
``fc5``): stage s has convolutions ``conv{s}_1`` (the strided one) to ``conv{s}_{1 + 2 * units}``. With
depth 20 the names and shapes equal the port's ``sphere20a`` (without its classifier ``fc6``).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS = (64, 128, 256, 512)
UNITS = {20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}
FEATURE_HW = (7, 6)


class SphereNet(nn.Module):
    """SphereFace residual network: ``forward(x) -> (embedding,)`` with an ``embedding_size``-d ``fc5``.

    ``feature_map(x)`` is the 512x7x6 output of the last stage; ``forward == embed_from_feature_map(...)``.
    Weight init as in the paper's Caffe definition: Xavier for the strided convolutions and ``fc5``,
    Gaussian (std 0.01) for the convolutions inside residual units, zero biases, PReLU slopes 0.25.
    """

    output_names = ("embedding",)

    def __init__(self, depth: int = 20, embedding_size: int = 512, in_channels: int = 3):
        super().__init__()
        if depth not in UNITS:
            raise ValueError(f"SphereNet depth must be one of {sorted(UNITS)}, got {depth}")
        self.depth = depth
        self.embedding_size = embedding_size
        self._stages: list[tuple[int, int]] = []  # (stage index, residual units)
        inp = in_channels
        for s, (ch, units) in enumerate(zip(STAGE_CHANNELS, UNITS[depth], strict=True), start=1):
            stride_conv = nn.Conv2d(inp, ch, 3, 2, 1)
            nn.init.xavier_uniform_(stride_conv.weight)
            nn.init.zeros_(stride_conv.bias)
            self.add_module(f"conv{s}_1", stride_conv)
            self.add_module(f"relu{s}_1", nn.PReLU(ch))
            for k in range(2, 2 + 2 * units):
                conv = nn.Conv2d(ch, ch, 3, 1, 1)
                nn.init.normal_(conv.weight, 0.0, 0.01)
                nn.init.zeros_(conv.bias)
                self.add_module(f"conv{s}_{k}", conv)
                self.add_module(f"relu{s}_{k}", nn.PReLU(ch))
            self._stages.append((s, units))
            inp = ch
        self.fc5 = nn.Linear(STAGE_CHANNELS[-1] * FEATURE_HW[0] * FEATURE_HW[1], embedding_size)
        nn.init.xavier_uniform_(self.fc5.weight)
        nn.init.zeros_(self.fc5.bias)

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of ``feature_map``'s output for one 112x96 image."""
        return (STAGE_CHANNELS[-1], *FEATURE_HW)

    def _layer(self, s: int, k: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"relu{s}_{k}")(getattr(self, f"conv{s}_{k}")(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,112,96] -> [N,512,7,6]."""
        for s, units in self._stages:
            x = self._layer(s, 1, x)
            for u in range(units):
                k = 2 + 2 * u
                x = x + self._layer(s, k + 1, self._layer(s, k, x))
        return x

    def embed_from_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """[N,512,7,6] -> [N,embedding_size] through ``fc5``."""
        return self.fc5(torch.flatten(fmap, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.embed_from_feature_map(self.feature_map(x)),)


def sphere20(**kw) -> SphereNet:
    """SphereFace-20 (units 1,2,4,1)."""
    return SphereNet(depth=20, **kw)


def sphere64(**kw) -> SphereNet:
    """SphereFace-64 (units 3,8,16,3)."""
    return SphereNet(depth=64, **kw)
