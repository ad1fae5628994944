"""Channels-last layout helpers for the attack's double backward: every derivative order stays channels-last.

oneDNN's depthwise kernels and PyTorch's elementwise loops are fast on channels-last tensors, but a single
NCHW tensor in the graph spreads: an elementwise product takes its first operand's layout, and every
consumer downstream then mixes layouts (measured 3-5x slower per product on [128, 32, 14, 14]). PyTorch's
own slicing, padding and concatenation produce NCHW gradients in the second derivative (``slice_backward``
writes into a fresh NCHW buffer), so the fast path uses the autograd pairs below instead: each is the
other's gradient, and every output is channels-last. They use ``forward(ctx: Any, ...)``, not ``setup_context``,
which would bind default arguments through ``inspect.signature`` on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def channels_last(x: Tensor) -> Tensor:
    """``x`` laid out channels-last (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def repeat_channels(x: Tensor, times: int) -> Tensor:
    """[N, C, H, W] -> [N, times * C, H, W] (``x`` repeated along channels), channels-last in one copy."""
    if times == 1:
        return channels_last(x)
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(n, h, w, times, c)
    return nhwc.reshape(n, h, w, times * c).permute(0, 3, 1, 2)


class _Cat(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *parts: Tensor) -> Tensor:
        ctx.sizes = [p.shape[1] for p in parts]
        return channels_last(torch.cat(parts, dim=1))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        out: tuple[Tensor, ...] = _Split.apply(grad, ctx.sizes)
        return out


class _Split(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: Sequence[int]) -> tuple[Tensor, ...]:
        return tuple(channels_last(p) for p in x.split(list(sizes), dim=1))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        return _Cat.apply(*grads), None


def cat_channels(parts: Sequence[Tensor]) -> Tensor:
    """``torch.cat(parts, dim=1)``, channels-last, with channels-last gradients of every order."""
    out: Tensor = _Cat.apply(*parts)
    return out


def split_channels(x: Tensor, sizes: Sequence[int]) -> tuple[Tensor, ...]:
    """``x.split(sizes, dim=1)`` as channels-last copies, with channels-last gradients of every order."""
    out: tuple[Tensor, ...] = _Split.apply(x, list(sizes))
    return out


class _Shift(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, back: bool) -> Tensor:
        ctx.back = back
        moved = F.pad(x, (1, 0, 1, 0))[..., :-1, :-1] if back else F.pad(x, (0, 1, 0, 1))[..., 1:, 1:]
        return channels_last(moved)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _Shift.apply(grad, not ctx.back), None


def shift_up_left(x: Tensor) -> Tensor:
    """``x[..., 1:, 1:]`` zero-padded back to its size at the bottom and right, channels-last (the input of
    a factorized reduction's second convolution); its gradient moves down and right."""
    out: Tensor = _Shift.apply(x, False)
    return out
