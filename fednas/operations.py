"""Candidate operations of the DARTS search space (the paper's Appendix A) as registries.

``OPS`` maps a primitive name to a builder ``(channels, stride, activation, batchnorm) -> nn.Module``.
``ACTIVATIONS`` maps an activation name to a module factory. Both are data: adding an entry extends
the search space without touching the supernet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fednas.registry import Registry

ActivationFactory = Callable[[], nn.Module]
OpBuilder = Callable[[int, int, ActivationFactory, bool], nn.Module]

ACTIVATIONS: Registry[ActivationFactory] = Registry("activation")
ACTIVATIONS.add("elu", nn.ELU)
ACTIVATIONS.add("tanh", nn.Tanh)
ACTIVATIONS.add("sigmoid", nn.Sigmoid)
ACTIVATIONS.add("relu", nn.ReLU)

OPS: Registry[OpBuilder] = Registry("operation")


def norm(channels: int, enabled: bool) -> nn.Module:
    """BatchNorm without affine parameters, as in the DARTS search network, or nothing."""
    return nn.BatchNorm2d(channels, affine=False) if enabled else nn.Identity()


class ActConvBN(nn.Sequential):
    """activation -> conv -> BN (DARTS's ReLUConvBN with a selectable activation)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 act: ActivationFactory, bn: bool) -> None:
        super().__init__(
            act(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            norm(c_out, bn),
        )


class DilConv(nn.Sequential):
    """activation -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int, act: ActivationFactory, bn: bool) -> None:
        super().__init__(
            act(),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            norm(c_out, bn),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable blocks; only the first one strides (as in DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 act: ActivationFactory, bn: bool) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, act, bn),
            DilConv(c_in, c_out, kernel, 1, padding, 1, act, bn),
        )


class Zero(nn.Module):
    """The ``none`` operation: a zero tensor of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset strided 1x1 convolutions (works for odd sizes too)."""

    def __init__(self, c_in: int, c_out: int, act: ActivationFactory, bn: bool) -> None:
        super().__init__()
        if c_out < 2:
            raise ValueError(f"FactorizedReduce needs at least 2 output channels, got {c_out}")
        self.act = act()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = norm(c_out, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        out: torch.Tensor = self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))
        return out


def _pool(pool: nn.Module, channels: int, bn: bool) -> nn.Module:
    return nn.Sequential(pool, norm(channels, bn))


OPS.add("none", lambda c, stride, act, bn: Zero(stride))
OPS.add("max_pool_3x3", lambda c, stride, act, bn: _pool(nn.MaxPool2d(3, stride, 1), c, bn))
OPS.add(
    "avg_pool_3x3",
    lambda c, stride, act, bn: _pool(nn.AvgPool2d(3, stride, 1, count_include_pad=False), c, bn),
)
OPS.add(
    "skip_connect",
    lambda c, stride, act, bn: nn.Identity() if stride == 1 else FactorizedReduce(c, c, act, bn),
)
OPS.add("sep_conv_3x3", lambda c, stride, act, bn: SepConv(c, c, 3, stride, 1, act, bn))
OPS.add("sep_conv_5x5", lambda c, stride, act, bn: SepConv(c, c, 5, stride, 2, act, bn))
OPS.add("dil_conv_3x3", lambda c, stride, act, bn: DilConv(c, c, 3, stride, 2, 2, act, bn))
OPS.add("dil_conv_5x5", lambda c, stride, act, bn: DilConv(c, c, 5, stride, 4, 2, act, bn))
