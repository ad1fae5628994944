"""Convolutions for the local search's fast path: channels-last in every gradient, and no dilated kernel.

oneDNN's channels-last convolutions are fast on the CPU for the supernet's small tensors, in the forward and in
both gradients, with two exceptions this module avoids:

* a gradient that arrives NCHW (from a slice or a concatenation upstream) drops oneDNN to its slow path:
  :func:`conv2d` makes the incoming gradient channels-last before its backward;
* dilated convolutions: a depthwise 5x5 with dilation 2 and stride 2 on a [16, 64, 14, 14] input took 10.6 ms
  for its backward, against 0.75 ms without dilation. The supernet's dilated convolutions have a dilation equal
  to 2, an even padding, and a stride of 1 or 2, so they are plain convolutions in disguise: with stride 2 only
  the even input positions are read (:func:`dilated_conv2d` subsamples the input and convolves it without
  dilation); with stride 1 the output's four parity phases each read one phase of the input, so the four
  phases go through one undilated convolution as four times the batch. The same function, summed in another
  order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fednas.rows import is_rows, row_conv2d

Tensor = torch.Tensor
# below this side the four phases are too small for oneDNN's kernels to pay for the copies (measured: at 7x7 a
# 5x5 dilated depthwise took 6.0 ms as phases against 4.4 ms dilated, forward and both gradients, [16, 64, 7, 7])
PHASES_FROM = 8


def channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _Conv(torch.autograd.Function):
    # forward(ctx, ...) rather than setup_context: with setup_context every apply binds default arguments
    # through inspect.signature
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: int, padding: int, groups: int) -> Tensor:
        x = channels_last(x)
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, groups)
        return channels_last(F.conv2d(x, weight, None, stride, padding, 1, groups))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        x, weight = ctx.saved_tensors
        stride, padding, groups = ctx.geometry
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gw, _ = torch.ops.aten.convolution_backward(
            channels_last(grad), x, weight, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], groups,
            [want_x, want_w, False])
        return (channels_last(gx) if want_x else None), (gw if want_w else None), None, None, None


def conv2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, groups: int = 1) -> Tensor:
    """``F.conv2d`` without bias or dilation, channels-last in the forward and in both gradients; a weight with a
    leading row dimension is one weight per row (:func:`fednas.rows.row_conv2d`)."""
    if is_rows(weight, 4):
        return row_conv2d(x, weight, stride, padding, 1, groups)
    out: Tensor = _Conv.apply(x, weight, stride, padding, groups)
    return out


def dilated_conv2d(x: Tensor, weight: Tensor, stride: int, padding: int, dilation: int, groups: int) -> Tensor:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)`` without a dilated kernel (see the module
    docstring); any other dilated geometry falls back to ``F.conv2d``. Row weights: :func:`fednas.rows.row_conv2d`
    (dilated as it is: its double backward is cheaper so than through the phases)."""
    if is_rows(weight, 4):
        return row_conv2d(x, weight, stride, padding, dilation, groups)
    if dilation == 1:
        return conv2d(x, weight, stride, padding, groups)
    n, c, h, w = x.shape
    if dilation == 2 and padding % 2 == 0 and stride == 2:
        return conv2d(x[:, :, ::2, ::2], weight, 1, padding // 2, groups)
    if dilation != 2 or padding % 2 or stride != 1 or min(h, w) < PHASES_FROM:
        return channels_last(F.conv2d(channels_last(x), weight, None, stride, padding, dilation, groups))
    even = F.pad(x, (0, w % 2, 0, h % 2))                       # zero rows read as the padding would be
    hh, ww = even.shape[-2] // 2, even.shape[-1] // 2
    phases = even.view(n, c, hh, 2, ww, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * n, c, hh, ww)
    y = conv2d(phases, weight, 1, padding // 2, groups)        # [4n, C', hh, ww]
    out = y.view(2, 2, n, -1, hh, ww).permute(2, 3, 4, 0, 5, 1).reshape(n, -1, 2 * hh, 2 * ww)
    return channels_last(out[:, :, :h, :w])
