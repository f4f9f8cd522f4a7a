"""MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks",
IEEE SPL 2016): P-Net, R-Net and O-Net as plain ``nn.Module`` s.

The layer order, PReLU placement, pooling padding and flatten order follow the MIT-licensed ``mtcnn`` PyPI
package (ipazc/mtcnn 1.0, Keras), whose trained weights :mod:`faceembed.models.mtcnn_weights` converts:

* inputs are RGB, ``(pixel - 127.5) / 128``, NCHW here (NHWC in Keras);
* convolutions are ``valid``; PReLU has one slope per channel;
* Keras ``MaxPooling2D(padding="same")`` pads at the bottom/right first (TensorFlow's rule), reproduced with an
  explicit ``-inf`` pad; the 2x2/2 pool of P-Net is ``ceil_mode=True`` (identical for any input size);
* before the fully connected layers Keras permutes the NHWC map to NWHC and flattens it; here the NCHW map is
  permuted to NWHC (``x.permute(0, 3, 2, 1)``) so the converted ``Dense`` weights apply unchanged.

Outputs: P-Net ``(box_reg [N,4,h,w], face_prob [N,h,w])``; R-Net ``(box_reg [N,4], face_prob [N])``; O-Net
``(box_reg [N,4], landmarks [N,10] as x1..x5 y1..y5 relative to the box, face_prob [N])``. Box regression is
``(dx1, dy1, dx2, dy2)`` in units of the box's width/height.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``same`` padding (before, after) along one axis of length ``size``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePool(nn.Module):
    """``MaxPooling2D(padding="same")`` for a fixed input size (R-Net / O-Net): pad with -inf, then pool."""

    def __init__(self, kernel: int, stride: int, size: int):
        super().__init__()
        top, bottom = _same_pad(size, kernel, stride)
        self.pad = (top, bottom, top, bottom)  # F.pad order: left, right, top, bottom (square input)
        self.pool = nn.MaxPool2d(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf"))
        return self.pool(x)


def _conv_prelu(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, k), nn.PReLU(cout)


class PNet(nn.Module):
    """Proposal network: fully convolutional, any input size >= 12x12; stride 2, 12x12 receptive cells."""

    output_names = ("box_reg", "face_prob")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)  # == TF "same" for 2x2 stride 2
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 4, 1)
        self.conv4_2 = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_2(x), dim=1)[:, 1]
        return self.conv4_1(x), prob


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    output_names = ("box_reg", "face_prob")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.pool1 = SamePool(3, 2, 22)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.fc4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 4)
        self.fc5_2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).flatten(1)  # Keras: Permute((2, 1, 3)) on NHWC, then Flatten
        x = self.prelu4(self.fc4(x))
        return self.fc5_1(x), torch.softmax(self.fc5_2(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output network on 48x48 crops: box regression, 5 landmarks, face probability."""

    output_names = ("box_reg", "landmarks", "face_prob")

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.pool1 = SamePool(3, 2, 46)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.pool3 = SamePool(2, 2, 8)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.fc5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 4)
        self.fc6_2 = nn.Linear(256, 10)
        self.fc6_3 = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.fc5(x))
        return self.fc6_1(x), self.fc6_2(x), torch.softmax(self.fc6_3(x), dim=1)[:, 1]


class MTCNN(nn.Module):
    """The three networks in one module (one checkpoint, arch ``"mtcnn"``).

    ``forward`` runs O-Net (the checkpoint's input spec is O-Net's 48x48); the detector in
    :mod:`faceembed.faces.detect` calls ``pnet``, ``rnet`` and ``onet`` separately.
    """

    output_names = ONet.output_names

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.onet(x)
