"""A CIFAR-style ResNet (depth 6n + 2, widths 16/32/64) with its input normalisation built in.

The fixed-architecture model of the project: AMIA's ``fixed`` shadow (the paper's setting, a ResNet scaled to the
input) and the DMP defense's ``resnet`` student are both this network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet of depth 6n + 2 (8, 14, 20, ...) with input normalisation built in."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, depth: int, in_channels: int, num_classes: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet-depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, c_in = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(_Block(c_in, width, 2 if stage and i == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem((x - self.mean) / self.std))
        logits: torch.Tensor = self.head(h.mean((2, 3)))
        return logits
