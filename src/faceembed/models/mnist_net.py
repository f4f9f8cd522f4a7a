"""A SphereFace-style residual CNN for 28x28 digits (conv + PReLU stages, each followed by residual units
as in the paper's networks), and the classifier that pairs it with a margin head."""

from __future__ import annotations

from torch import nn

from faceembed.losses import MarginHead


class ResidualUnit(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN-PReLU plus identity (SphereFace's residual unit, with batch norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x):
        return x + self.body(x)


class MnistNet(nn.Module):
    """1x28x28 -> 3 stages (stride-2 conv + PReLU, then residual units) 28->14->7->4 -> embedding."""

    output_names = ("embedding",)

    def __init__(self, embedding_size: int = 64, widths: tuple[int, ...] = (32, 64, 128),
                 units: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for width, n in zip(widths, units, strict=True):
            layers += [nn.Conv2d(c_in, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.PReLU(width)]
            layers += [ResidualUnit(width) for _ in range(n)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * 4 * 4, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.bn(self.fc(self.features(x).flatten(1)))


class MnistClassifier(nn.Module):
    """MnistNet + MarginHead; ``forward(x) -> (logits, embedding)`` without margin (inference)."""

    output_names = ("logits", "embedding")

    def __init__(self, embedding_size: int = 64, num_classes: int = 10, loss: str = "asoftmax",
                 m: float | None = None, s: float | None = None, widths: tuple[int, ...] = (32, 64, 128),
                 units: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.backbone = MnistNet(embedding_size, tuple(widths), tuple(units))
        self.head = MarginHead(embedding_size, num_classes, loss, m, s)

    def forward(self, x):
        emb = self.backbone(x)
        return self.head.logits(emb), emb
