"""Frozen-weight convolutions for the attack's double backward, channels-last, one kernel call per order.

A :class:`FrozenConv` is a convolution whose weight never needs a gradient: ADRA differentiates with
respect to the images only. Its backward is the transposed convolution and the transposed convolution's
backward is the convolution again, so derivatives of every order are single kernel calls (PyTorch's own
double backward of a grouped convolution loops over the groups).

Both directions run as *forward* convolutions on channels-last tensors. The transposed convolution is a
forward convolution of the (zero-interleaved, for strides above 1) gradient with the flipped, transposed
kernel. Measured on the 2-core AMD EPYC used for development, 128 images: oneDNN's channels-last
depthwise forward kernel is 2-9x faster than its NCHW one (0.2-0.3 ms against 1.6-2.1 ms at 8 channels,
14x14), and a dilated transposed depthwise convolution takes 7-9 ms as oneDNN's own kernel against
0.4-0.5 ms as a forward convolution of the zero-interleaved input. Strided convolutions without dilation
keep oneDNN's transposed kernel, which avoids the 4x larger interleaved input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from attacker.reconstruct.fast.layout import channels_last

Tensor = torch.Tensor


def transposed_kernel(weight: Tensor, groups: int) -> Tensor:
    """The kernel of the forward convolution that computes the transposed convolution of ``weight``:
    per group, input and output channels swapped, and the window flipped."""
    out, per_in, kh, kw = weight.shape
    blocks = weight.view(groups, out // groups, per_in, kh, kw).transpose(1, 2)
    return blocks.reshape(groups * per_in, out // groups, kh, kw).flip(-2, -1).contiguous()


def interleave_zeros(g: Tensor, stride: int, extra: Sequence[int]) -> Tensor:
    """``g`` with ``stride - 1`` zero rows and columns between its own and ``extra`` more at the bottom and
    right (channels-last)."""
    if stride == 1 and not any(extra):
        return g
    n, c, h, w = g.shape
    out = torch.zeros(n, (h - 1) * stride + 1 + extra[0], (w - 1) * stride + 1 + extra[1], c, dtype=g.dtype,
                      device=g.device).permute(0, 3, 1, 2)
    out[:, :, :(h - 1) * stride + 1:stride, :(w - 1) * stride + 1:stride] = g
    return out


@dataclass(frozen=True, eq=False)
class FrozenConv:
    """``conv2d(x, weight)`` with fixed geometry; call it on [N, C, H, W] tensors."""

    weight: Tensor
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    weight_t: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.padding > self.reach:
            raise ValueError(f"FrozenConv needs padding <= dilation * (kernel - 1), got {self.padding}")
        object.__setattr__(self, "weight", self.weight.detach().contiguous())
        object.__setattr__(self, "weight_t", transposed_kernel(self.weight, self.groups))

    @property
    def reach(self) -> int:
        return self.dilation * (self.weight.shape[-1] - 1)

    def __call__(self, x: Tensor) -> Tensor:
        out: Tensor = _Conv.apply(x, self)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return channels_last(F.conv2d(channels_last(x), self.weight, None, self.stride, self.padding, self.dilation,
                                      self.groups))

    def transpose(self, g: Tensor, size: tuple[int, int]) -> Tensor:
        """The transposed convolution of ``g`` back to spatial ``size`` (the gradient of :meth:`forward`):
        a forward convolution of ``g``, zero-interleaved by the stride, with the transposed kernel; strided
        convolutions without dilation use oneDNN's transposed kernel instead."""
        h, w = g.shape[-2:]
        left = self.reach - self.padding
        extra = [size[0] - ((h - 1) * self.stride + 1 + 2 * left - self.reach),
                 size[1] - ((w - 1) * self.stride + 1 + 2 * left - self.reach)]
        g = channels_last(g)
        if self.stride > 1 and self.dilation == 1:   # oneDNN's own kernel: no 4x larger zero-interleaved input
            return F.conv_transpose2d(g, self.weight, None, self.stride, self.padding, extra, self.groups)
        u = interleave_zeros(g, self.stride, extra)
        return F.conv2d(u, self.weight_t, None, 1, left, self.dilation, self.groups)


class _Conv(torch.autograd.Function):
    # forward(ctx: Any, ...) rather than setup_context: with setup_context, every apply binds default arguments
    # through inspect.signature (about 30 µs, ~900 applies per evaluation of the attack's double backward)
    @staticmethod
    def forward(ctx: Any, x: Tensor, conv: FrozenConv) -> Tensor:
        ctx.conv, ctx.size = conv, tuple(x.shape[-2:])
        return conv.forward(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _ConvT.apply(grad, ctx.conv, ctx.size), None


class _ConvT(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, g: Tensor, conv: FrozenConv, size: tuple[int, int]) -> Tensor:
        ctx.conv = conv
        return conv.transpose(g, size)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _Conv.apply(grad, ctx.conv), None, None
