"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, the ``anet_type`` of dlib's
``dnn_face_recognition_ex.cpp``) as a plain PyTorch module, for 3x150x150 RGB face chips.

dlib's definition, from the input up::

    input_rgb_image_sized<150>                       (pixel - avg_rgb) / 256
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>     stem: 150 -> 72 -> 35
    alevel4: ares<32> x3                              35
    alevel3: ares_down<64>,  ares<64> x3              17
    alevel2: ares_down<128>, ares<128> x2             8
    alevel1: ares_down<256>, ares<256> x2             4 (the block's 3x3 output is zero-padded to the 4x4 shortcut)
    alevel0: ares_down<256>                           2 (the block's 1x1 output is zero-padded to the 2x2 shortcut)
    avg_pool_everything fc_no_bias<128> loss_metric   raw 128-d descriptor (not L2-normalised)

    ares<N>      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N> = relu(avg_pool2x2s2(x) + affine(con3x3(relu(affine(con3x3_stride2(x))))))

``affine`` is dlib's inference form of batch norm (``gamma * x + beta`` per channel); convolutions have
biases. dlib pads a convolution by ``k // 2`` only when its stride is 1 and by **0 otherwise** (so the stride-2
3x3 convs and the 7x7 stem have no padding), and its ``add_prev`` adds tensors of different shapes by
zero-padding both to the larger size (extra channels and the bottom/right rows and columns), which the last
two down-sampling blocks rely on. Module names follow dlib's levels: ``conv1``/``affine1`` (stem),
``alevel4`` ... ``alevel0`` (each an ``nn.Sequential`` of :class:`DlibBlock`), ``fc``.

Input: NCHW float, RGB, ``pixel / 256`` (the checkpoint's ``InputSpec(mean=0, scale=256)``); the module first
subtracts its fixed buffer ``input_mean`` = dlib's per-channel average (122.782, 117.001, 104.298) / 256, so
``forward`` sees exactly dlib's ``(pixel - avg) / 256``. Weights come from dlib's ``.dat`` file through
:mod:`faceembed.models.dlib_weights`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: dlib's ``input_rgb_image`` defaults (the values the released model file holds).
DLIB_AVG_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 150
EMBEDDING_SIZE = 128
FEATURE_CHANNELS = 256
FEATURE_HW = (2, 2)
#: (level name, width, down-sampling first block, number of blocks), input to output.
LEVELS: tuple[tuple[str, int, bool, int], ...] = (
    ("alevel4", 32, False, 3),
    ("alevel3", 64, True, 4),
    ("alevel2", 128, True, 3),
    ("alevel1", 256, True, 3),
    ("alevel0", 256, True, 1),
)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` where each is zero-padded (channels, then bottom rows and right columns)
    to the larger size in every dimension."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """dlib's ``affine`` layer in CONV_MODE: ``weight[c] * x + bias[c]`` (a frozen batch norm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class DlibBlock(nn.Module):
    """``ares`` (``down=False``) or ``ares_down`` (``down=True``): conv3x3 (stride 2, no padding when down) -
    affine - relu - conv3x3 - affine, plus the identity (or 2x2/2 average-pooled) input, then relu."""

    def __init__(self, inp: int, oup: int, down: bool):
        super().__init__()
        self.down = down
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(inp, oup, 3, stride=stride, padding=padding, bias=True)
        self.affine1 = Affine(oup)
        self.conv2 = nn.Conv2d(oup, oup, 3, stride=1, padding=1, bias=True)
        self.affine2 = Affine(oup)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, shortcut))


class DlibResNet(nn.Module):
    """dlib's ResNet-29: ``forward(x [N,3,150,150]) -> (embedding [N,128],)``, the raw descriptor (dlib does
    not L2-normalise it; dlib compares descriptors by Euclidean distance < 0.6).

    ``forward_features(x)`` is the [N,256,2,2] output of ``alevel0`` (the last residual level, after its
    final relu), i.e. the map that dlib's ``avg_pool_everything`` averages before ``fc``;
    ``forward(x) == (embed_from_feature_map(forward_features(x)),)``. ``feature_map`` is an alias.
    """

    output_names = ("embedding",)

    def __init__(self, embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        self.embedding_size = embedding_size
        self.register_buffer("input_mean", torch.tensor(DLIB_AVG_RGB).reshape(1, 3, 1, 1) / 256.0)
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0, bias=True)
        self.affine1 = Affine(32)
        inp = 32
        for name, width, down, n in LEVELS:
            blocks = [DlibBlock(inp, width, down)] + [DlibBlock(width, width, False) for _ in range(n - 1)]
            setattr(self, name, nn.Sequential(*blocks))
            inp = width
        self.fc = nn.Linear(FEATURE_CHANNELS, embedding_size, bias=False)

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of ``forward_features``'s output for one 150x150 chip."""
        return (FEATURE_CHANNELS, *FEATURE_HW)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,150,150] (``pixel / 256``) -> [N,256,2,2]: the output of ``alevel0``."""
        x = x - self.input_mean
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        for name, *_ in LEVELS:
            x = getattr(self, name)(x)
        return x

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of ``forward_features``."""
        return self.forward_features(x)

    def embed_from_feature_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """[N,256,2,2] -> [N,128]: global average pool, then ``fc`` (no bias)."""
        return self.fc(fmap.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.embed_from_feature_map(self.forward_features(x)),)


def dlib_layer_plan() -> list[tuple[str, str, dict[str, Any]]]:
    """dlib's layers from the input up, as ``(kind, torch module name, hyper-parameters to check)``; kinds as
    :class:`faceembed.models.dlib_weights.DlibLayer` names them (``tag_or_skip`` for tag and skip layers)."""

    def con(name: str, n: int, k: int, s: int) -> tuple[str, str, dict[str, Any]]:
        p = k // 2 if s == 1 else 0
        return ("con", name, {"num_filters": n, "nr": k, "nc": k, "stride_y": s, "stride_x": s,
                              "padding_y": p, "padding_x": p, "use_bias": True})

    def pool(kind: str, k: int, s: int) -> tuple[str, str, dict[str, Any]]:
        return (kind, "", {"nr": k, "nc": k, "stride_y": s, "stride_x": s, "padding_y": 0, "padding_x": 0})

    plain = ("relu", "", {})
    plan = [con("conv1", 32, 7, 2), ("affine", "affine1", {"mode": "conv"}), plain, pool("max_pool", 3, 2)]
    for level, width, down, n in LEVELS:
        for i in range(n):
            b = f"{level}.{i}"
            is_down = down and i == 0
            plan += [("tag_or_skip", "", {}),  # tag1
                     con(f"{b}.conv1", width, 3, 2 if is_down else 1), ("affine", f"{b}.affine1", {"mode": "conv"}),
                     plain, con(f"{b}.conv2", width, 3, 1), ("affine", f"{b}.affine2", {"mode": "conv"})]
            if is_down:
                plan += [("tag_or_skip", "", {}), ("tag_or_skip", "", {}), pool("avg_pool", 2, 2)]  # tag2 skip1
            plan += [("add_prev", "", {}), plain]
    plan += [pool("avg_pool", 0, 1), ("fc", "fc", {"num_outputs": EMBEDDING_SIZE, "num_inputs": FEATURE_CHANNELS,
                                                    "bias": False})]
    return plan
