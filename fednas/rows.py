"""Many weight sets evaluated at once ("rows"), twice differentiable, for the supernet's fast path.

A row is one copy of the network with its own weights: a weight tensor of shape ``[R, *shape]`` instead of
``shape`` holds R rows, and a batch of ``R·B`` samples is laid out row by row (samples ``r·B … r·B + B − 1``
belong to row ``r``). :func:`row_conv2d` evaluates every row's convolution in one grouped call (rows side by side
in the channels, ``groups × R``), :func:`row_linear` every row's classifier in one batched matrix product. Then
``autograd.grad(Σ_r loss_r, [weights of shape [R, ...]])`` is every row's own weight gradient, with no ``vmap``:
the Δθ attacks replay R clients' local searches at once this way (:mod:`attacker.reconstruct.trajectory`).

Those attacks differentiate the weight gradient once more, with respect to the input images. PyTorch's double
backward of a grouped convolution (``_convolution_double_backward``) runs one small convolution per group, which
made a depthwise layer cost thousands of calls; here every derivative of a convolution, first and second, is one
grouped first-order kernel (:class:`_InputGrad`, :class:`_WeightGrad`), and a 1x1 convolution is a batched matrix
product (twice differentiable natively; at batch sizes below 16 on one thread PyTorch would send it to a
per-group loop as well).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Geometry = tuple[int, int, int, int]    # stride, padding, dilation, groups
_aten = torch.ops.aten


_LAYOUT = {"single_sample_nchw": True}


@contextlib.contextmanager
def channels_last_throughout() -> Iterator[None]:
    """The previous layout, kept callable so benches can pair it against today's: a single sample (one image per
    row: the Δθ inversion's default B = 1) converted to channels-last like any batch."""
    before = _LAYOUT["single_sample_nchw"]
    _LAYOUT["single_sample_nchw"] = False
    try:
        yield
    finally:
        _LAYOUT["single_sample_nchw"] = before


def _single(x: Tensor) -> bool:
    return x.shape[0] == 1 and _LAYOUT["single_sample_nchw"]


def _cl(x: Tensor) -> Tensor:
    """Channels-last, except a single sample, which stays NCHW: with one image per row the rows sit side by side in
    one sample's channels, and channels-last for one sample is a full transpose (a fifth of an inversion's time at
    32 rows went to those copies)."""
    if _single(x):
        return x.contiguous()
    return x.contiguous(memory_format=torch.channels_last)


def _depthwise(x: Tensor, weight: Tensor, groups: int) -> bool:
    return weight.shape[1] == 1 and groups == x.shape[1] == weight.shape[0]


def _depthwise_weight_grad(grad: Tensor, x: Tensor, kernel: int, geo: Geometry) -> Tensor:
    """A depthwise convolution's weight gradient as one forward depthwise convolution whose kernel is the output
    gradient (taps ``s`` apart, outputs ``d`` apart): 4-12x faster than oneDNN's backward-weights kernel on the
    supernet's shapes (one thread)."""
    s, p, d, _ = geo
    n, c = x.shape[:2]
    kernels = grad.transpose(0, 1).reshape(c, n, *grad.shape[2:]).contiguous()   # [c, n, oh, ow]
    if _single(x):   # the convolution pads: 2-5x faster than padding a copy first at one sample
        return F.conv2d(x.contiguous(), kernels, None, d, p, s, c)[0, :, :kernel, :kernel].unsqueeze(1)
    padded = F.pad(x, (p, p, p, p)).contiguous()
    inputs = padded.transpose(0, 1).reshape(1, c * n, *padded.shape[2:])         # channels (c, n)
    return F.conv2d(inputs, kernels, None, d, 0, s, c)[0, :, :kernel, :kernel].unsqueeze(1)


def _spread(grad: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """The output gradient with ``stride − 1`` zeros between its entries, zero-padded at the end to ``size``: a
    strided convolution's input gradient is then a stride-1 correlation."""
    n, c, h, w = grad.shape
    up = F.pad(grad.reshape(n, c, h, 1, w, 1), (0, stride - 1, 0, 0, 0, stride - 1)).reshape(n, c, h * stride,
                                                                                               w * stride)
    up = up[:, :, :(h - 1) * stride + 1, :(w - 1) * stride + 1]
    return F.pad(up, (0, size[1] - up.shape[3], 0, size[0] - up.shape[2]))


def _depthwise_input_grad(grad: Tensor, x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """A depthwise convolution's input gradient as the correlation of the (spread) output gradient with the flipped
    kernel, a forward convolution: oneDNN's backward-data kernel took 10-50x longer on dilated or strided ones."""
    s, p, d, g = geo
    reach = d * (weight.shape[-1] - 1)
    if s > 1:
        grad = _spread(grad, s, (x.shape[2] - reach + 2 * p, x.shape[3] - reach + 2 * p))
    return _cl(F.conv2d(_cl(grad), weight.flip(-1, -2), None, 1, reach - p, d, g))


def _backward(grad: Tensor, x: Tensor, weight: Tensor, geo: Geometry, want_x: bool) -> Tensor:
    """One of a convolution's two first-order gradients (of the input, or of the weight). Depthwise convolutions
    take faster routes: the weight gradient by :func:`_depthwise_weight_grad`, the input gradient of a stride-1
    by :func:`_depthwise_input_grad`."""
    s, p, d, g = geo
    k = weight.shape[-1]
    if _depthwise(x, weight, g) and weight.shape[-2] == k:
        if not want_x:
            return _depthwise_weight_grad(grad, x, k, geo)
        if d * (k - 1) >= p:
            return _depthwise_input_grad(grad, x, weight, geo)
    gx, gw, _ = _aten.convolution_backward(_cl(grad), _cl(x), weight, None, [s, s], [p, p], [d, d], False, [0, 0],
                                           g, [want_x, not want_x, False])
    return _cl(gx) if want_x else gw


def _forward(x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    s, p, d, g = geo
    return _cl(F.conv2d(_cl(x), weight, None, s, p, d, g))


class _InputGrad(torch.autograd.Function):
    """∂⟨grad, conv(x, w)⟩/∂x, differentiable in ``grad`` and ``w`` (``x`` only gives the shape)."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(grad, x, weight)
        ctx.geo = geo
        return _backward(grad, x, weight, geo, True)

    @staticmethod
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor | None, None, Tensor | None, None]:
        grad, _, weight = ctx.saved_tensors
        d_grad = _forward(gg, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        d_weight = _backward(grad, gg, weight, ctx.geo, False) if ctx.needs_input_grad[2] else None
        return d_grad, None, d_weight, None


class _WeightGrad(torch.autograd.Function):
    """∂⟨grad, conv(x, w)⟩/∂w, differentiable in ``grad`` and ``x`` (``w`` only gives the shape)."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(grad, x, weight)
        ctx.geo = geo
        return _backward(grad, x, weight, geo, False)

    @staticmethod
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        grad, x, _ = ctx.saved_tensors
        d_grad = _forward(x, gg, ctx.geo) if ctx.needs_input_grad[0] else None
        d_x = _backward(grad, x, gg, ctx.geo, True) if ctx.needs_input_grad[1] else None
        return d_grad, d_x, None, None


class _Conv(torch.autograd.Function):
    """``F.conv2d`` whose gradients are :class:`_InputGrad` and :class:`_WeightGrad` (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.geo = geo
        return _forward(x, weight, geo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        gx = _InputGrad.apply(grad, x, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        gw = _WeightGrad.apply(grad, x, weight, ctx.geo) if ctx.needs_input_grad[1] else None
        return gx, gw, None


def _pointwise(x: Tensor, weight: Tensor, groups: int) -> Tensor:
    """A 1x1, stride-1 grouped convolution as one batched matrix product over channels-last pixels (a single
    sample: over its NCHW planes, ``[groups, C/groups, H·W]``, with no copy)."""
    n, c, h, w = x.shape
    out = weight.shape[0]
    if _single(x):
        planes = x.reshape(groups, c // groups, h * w)
        return torch.bmm(weight.view(groups, out // groups, c // groups), planes).view(1, out, h, w)
    pixels = _cl(x).permute(0, 2, 3, 1).reshape(n * h * w, groups, c // groups).transpose(0, 1)
    y = torch.bmm(pixels, weight.view(groups, out // groups, c // groups).transpose(1, 2))
    return y.transpose(0, 1).reshape(n, h, w, out).permute(0, 3, 1, 2)


def twice_differentiable_conv2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, dilation: int = 1,
                                groups: int = 1) -> Tensor:
    """``F.conv2d`` without bias; its double backward costs a few grouped kernels, never one call per group."""
    if weight.shape[-2:] == (1, 1) and stride == 1 and padding == 0:
        return _pointwise(x, weight, groups)
    out: Tensor = _Conv.apply(x, weight, (stride, padding, dilation, groups))
    return out


def _to_channels(x: Tensor, rows: int) -> Tensor:
    """[R·B, C, H, W] -> [B, R·C, H, W] (rows side by side in the channels)."""
    n, c, h, w = x.shape
    return x.view(rows, n // rows, c, h, w).transpose(0, 1).reshape(n // rows, rows * c, h, w)


def _to_batch(y: Tensor, rows: int) -> Tensor:
    """[B, R·C, H, W] -> [R·B, C, H, W]."""
    b, rc, h, w = y.shape
    return y.view(b, rows, rc // rows, h, w).transpose(0, 1).reshape(rows * b, rc // rows, h, w)


def row_conv2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, dilation: int = 1,
               groups: int = 1) -> Tensor:
    """Row r's samples of ``x`` ([R·B, C, H, W]) convolved with ``weight[r]`` ([R, C_out, C/groups, k, k])."""
    rows = weight.shape[0]
    if x.shape[0] % rows:
        raise ValueError(f"a batch of {x.shape[0]} samples cannot be split into {rows} rows")
    y = twice_differentiable_conv2d(_to_channels(x, rows), weight.flatten(0, 1), stride, padding, dilation,
                                    groups * rows)
    return _to_batch(y, rows)


def row_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` with one weight (and bias) per row: x [R·B, in], weight [R, out, in], bias [R, out]."""
    rows = weight.shape[0]
    y = torch.bmm(x.view(rows, -1, x.shape[1]), weight.transpose(1, 2))
    if bias is not None:
        y = y + bias.unsqueeze(1)
    return y.flatten(0, 1)


def is_rows(weight: Tensor, plain_dims: int) -> bool:
    """Whether ``weight`` carries a leading row dimension (one more than a plain weight's ``plain_dims``)."""
    return weight.dim() == plain_dims + 1
