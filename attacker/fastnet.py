"""A faster evaluation of the supernet function for the attack's double backward on CPU.

``FastSuperNet(model)(x, alphas)`` computes ``model(x, alphas)``: the same function and the same second
derivatives (tested to 1e-5), with far fewer and cheaper kernel calls. ADRA differentiates an α gradient
with respect to the images, so every operation runs forward, backward and backward-of-backward, and on
CPU the supernet's hundreds of tiny operations are dominated by per-call overhead. What changes:

* every edge leaving a state is evaluated together: the convolutions of one kind on all those edges
  become one call with their output channels side by side, and the second half of a separable
  convolution one call grouped by edge. Parameter-free operations (pooling, identity) run once per state
  instead of once per edge, and the α-weighted sum is taken per state, not per edge;
* each depthwise + pointwise pair becomes one dense convolution (``fuse_pair``). PyTorch's grouped
  (depthwise) convolution loops over channels in its double backward: at one image, 3,192 kernel calls
  per iteration, against 424 once dense. Run separately (depthwise, then pointwise) they cost fewer
  multiplications but measured slower here at every batch size tried, because CPU depthwise kernels are slow;
* every convolution is a frozen-weight :class:`_Conv` whose backward is a transposed convolution and vice
  versa, so each derivative order is one kernel call;
* the activation of a state is computed once and shared by every operation reading it (DARTS applies it
  inside each operation);
* 3x3 average pooling (count_include_pad=False) is a sum of shifted slices times a constant count map,
  and max pooling runs channels-last (PyTorch's CPU max pooling is 4-9x faster in that layout).

Measured for one ADRA iteration on the default MNIST supernet, one core: 17-19 ms per image with 32
captures batched (54 ms before these changes), about 40 ms with 8 (150 ms before). ``archleak bench adra
--compare-sequential`` times 32 captures batched against a loop over them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fednas.operations import DilConv, FactorizedReduce, SepConv
from fednas.search_space import SupernetSpec
from fednas.supernet import SearchCell, SuperNet

Tensor = torch.Tensor
# (state, activated state) -> [n, E, C, H, W]: one output per edge leaving the state (E = 1: shared by all)
EdgesFn = Callable[[Tensor, Tensor], Tensor]


def fuse_pair(dw: nn.Conv2d, pw: nn.Conv2d) -> Tensor:
    """Weight of one dense conv equal to ``pw(dw(x))`` (convolution is linear: ``W[o, i] = pw[o, i] * dw[i]``)."""
    return (pw.weight[:, :, 0, 0].unsqueeze(-1).unsqueeze(-1) * dw.weight[:, 0].unsqueeze(0)).detach()


def _box_sum(x: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """3x3 window sums with zero padding 1, and each window's count of real pixels."""
    h, w = x.shape[-2:]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1

    def window(t: Tensor) -> Tensor:
        tp = F.pad(t, (1, 1, 1, 1))
        r = sum(tp[..., :, j:j + stride * (wo - 1) + 1:stride] for j in range(3))
        return sum(r[..., i:i + stride * (ho - 1) + 1:stride, :] for i in range(3))

    return window(x), window(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))


def avg_pool_3x3(x: Tensor, stride: int) -> Tensor:
    total, count = _box_sum(x, stride)
    return total / count


Geometry = tuple[int, int, int, int]  # stride, padding, dilation, groups


class _Conv(torch.autograd.Function):
    """A convolution with a frozen weight whose backward is a transposed convolution (and vice versa), so
    derivatives of any order are single kernel calls (PyTorch's own double backward loops over groups)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, geom: Geometry) -> Tensor:
        return F.conv2d(x, weight, None, geom[0], geom[1], geom[2], geom[3])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        x, ctx.weight, ctx.geom = inputs
        ctx.size = tuple(x.shape[-2:])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _ConvT.apply(grad, ctx.weight, ctx.geom, ctx.size), None, None


class _ConvT(torch.autograd.Function):
    @staticmethod
    def forward(g: Tensor, weight: Tensor, geom: Geometry, size: tuple[int, int]) -> Tensor:
        stride, padding, dilation, groups = geom
        reach = dilation * (weight.shape[-1] - 1) + 1
        extra = [size[i] - ((g.shape[i - 2] - 1) * stride - 2 * padding + reach) for i in (0, 1)]
        return F.conv_transpose2d(g, weight, None, stride, padding, extra, groups, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        _, ctx.weight, ctx.geom, _ = inputs

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        return _Conv.apply(grad, ctx.weight, ctx.geom), None, None, None


def frozen_conv(weight: Tensor, stride: int = 1, padding: int = 0, dilation: int = 1,
                groups: int = 1) -> Callable[[Tensor], Tensor]:
    geom = (stride, padding, dilation, groups)
    return lambda x: _Conv.apply(x, weight, geom)


def _norm(norms: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    """The edges' normalisation on [n, E, C, H, W] (BatchNorm without affine, as built by the supernet)."""
    first = norms[0]
    if not isinstance(first, nn.BatchNorm2d):
        return lambda t: t
    if first.training:  # batch statistics per channel: the same for every edge
        return lambda t: F.batch_norm(t.flatten(1, 2), None, None, training=True, eps=first.eps).view_as(t)
    mean = torch.cat([m.running_mean for m in norms])
    var = torch.cat([m.running_var for m in norms])

    def running(t: Tensor) -> Tensor:
        t = t.expand(t.shape[0], len(norms), *t.shape[2:])
        return F.batch_norm(t.flatten(1, 2), mean, var, training=False, eps=first.eps).view_as(t)
    return running


def _split(t: Tensor, edges: int) -> Tensor:
    return t.view(t.shape[0], edges, -1, *t.shape[-2:])


def _dil_fn(blocks: Sequence[nn.Module]) -> EdgesFn:
    """act -> dw -> pw -> norm on every edge, as one dense convolution (input: the activated state)."""
    dw = blocks[0][1]
    conv = frozen_conv(torch.cat([fuse_pair(b[1], b[2]) for b in blocks]), dw.stride[0], dw.padding[0],
                       dw.dilation[0])
    norm, e = _norm([b[3] for b in blocks]), len(blocks)
    return lambda h, a: norm(_split(conv(a), e))


def _sep_fn(ops: Sequence[nn.Module]) -> EdgesFn:
    """Two dil blocks: the first over the shared activated state, the second grouped by edge."""
    first = _dil_fn([o[0] for o in ops])
    blocks = [o[1] for o in ops]
    act, dw, e = blocks[0][0], blocks[0][1], len(blocks)
    conv = frozen_conv(torch.cat([fuse_pair(b[1], b[2]) for b in blocks]), dw.stride[0], dw.padding[0],
                       dw.dilation[0], e)
    norm = _norm([b[3] for b in blocks])

    def fn(h: Tensor, a: Tensor) -> Tensor:
        return norm(_split(conv(act(first(h, a)).flatten(1, 2)), e))
    return fn


def _reduce_fn(ops: Sequence[FactorizedReduce]) -> EdgesFn:
    c1 = frozen_conv(torch.cat([o.conv_1.weight.detach() for o in ops]), 2)
    c2 = frozen_conv(torch.cat([o.conv_2.weight.detach() for o in ops]), 2)
    norm, e = _norm([o.bn for o in ops]), len(ops)

    def fn(h: Tensor, a: Tensor) -> Tensor:
        y1 = c1(a)
        y2 = c2(F.pad(a, (0, 1, 0, 1))[:, :, 1:, 1:])
        return norm(torch.cat([_split(y1, e), _split(y2, e)], dim=2))
    return fn


def _channels_last(pool: nn.Module, h: Tensor) -> Tensor:
    """``pool(h)`` computed channels-last: PyTorch's CPU max pooling is 4-9x faster in that layout here."""
    return pool(h.contiguous(memory_format=torch.channels_last)).contiguous()


def _edges_fn(ops: Sequence[nn.Module]) -> EdgesFn:
    """One candidate operation on every edge leaving a state."""
    op = ops[0]
    if isinstance(op, SepConv):
        return _sep_fn(ops)
    if isinstance(op, DilConv):
        return _dil_fn(ops)
    if isinstance(op, FactorizedReduce):
        return _reduce_fn(ops)
    if isinstance(op, nn.Identity):
        return lambda h, a: h.unsqueeze(1)
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.AvgPool2d) and not op[0].count_include_pad:
        stride, norm = int(op[0].stride), _norm([o[1] for o in ops])
        return lambda h, a: norm(avg_pool_3x3(h, stride).unsqueeze(1))
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.MaxPool2d):
        pool, norm = op[0], _norm([o[1] for o in ops])
        return lambda h, a: norm(_channels_last(pool, h).unsqueeze(1))
    return lambda h, a: torch.stack([o(h) for o in ops], dim=1)  # any other registered operation, per edge


class FastSource:
    """Every edge leaving state ``j`` of a cell: targets (node indices), α rows, one function per operation."""

    def __init__(self, cell: SearchCell, j: int) -> None:
        offsets = [sum(m + 2 for m in range(i)) for i in range(cell.nodes)]
        self.targets = list(range(max(0, j - 1), cell.nodes))
        rows = [offsets[i] + j for i in self.targets]
        self.rows = torch.tensor(rows)
        mixed = [cell.edges[r] for r in rows]
        self.active = mixed[0].active
        self.ops = [_edges_fn([m.ops[k] for m in mixed]) for k in self.active]

    def __call__(self, h: Tensor, a: Tensor, weights: Tensor) -> list[Tensor]:
        """``weights``: [n, edges, ops] (per sample) or [edges, ops]; one [n, C, H, W] per target node."""
        w = weights[..., self.rows, :]
        total = None
        for k, fn in zip(self.active, self.ops, strict=True):
            wk = w[..., k]
            term = wk.reshape(*wk.shape, 1, 1, 1) * fn(h, a)
            total = term if total is None else total + term
        assert total is not None
        return list(total.unbind(1))


class FastCell:
    def __init__(self, cell: SearchCell) -> None:
        self.nodes, self.act = cell.nodes, cell.preprocess1[0]
        self.pre0, self.pre1 = cell.preprocess0, cell.preprocess1
        self.sources = [FastSource(cell, j) for j in range(cell.nodes + 1)]

    def __call__(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        pending: list[Tensor | None] = [None] * self.nodes
        for j, source in enumerate(self.sources):
            h = states[j]
            for i, part in zip(source.targets, source(h, self.act(h), weights), strict=True):
                pending[i] = part if pending[i] is None else pending[i] + part
            if j >= 1:  # every edge into node j - 1 has now been added
                node = pending[j - 1]
                assert node is not None
                states.append(node)
        return torch.cat(states[2:], dim=1)


class FastSuperNet(nn.Module):
    """``model``'s function, evaluated edge-batched (see the module docstring); ``model`` stays untouched."""

    def __init__(self, model: SuperNet) -> None:
        super().__init__()
        self.model = model
        self.cells = [FastCell(c) for c in model.cells]

    @property
    def spec(self) -> SupernetSpec:
        return self.model.spec

    def forward(self, x: Tensor, alphas: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits, as :meth:`fednas.supernet.SuperNet.forward` (α per group: [edges, ops] or [N, edges, ops])."""
        model = self.model
        source = model.alphas if alphas is None else alphas
        weights = {g: F.softmax(a, dim=-1) for g, a in source.items()}
        s0 = s1 = model.stem((x - model.input_mean) / model.input_std)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[self.spec.alpha_group(i)])
        return model.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
