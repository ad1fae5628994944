"""A faster evaluation of the supernet function for the attack's double backward on CPU.

``FastSuperNet(model)(x, alphas)`` computes ``model(x, alphas)``: the same function and the same second
derivatives (tested to 1e-5), with far fewer and cheaper kernel calls. ADRA differentiates an α gradient
with respect to the images, so every operation runs forward, backward and backward-of-backward. What
changes:

* every edge leaving a state is evaluated together: the convolutions of one kind on all those edges
  become one depthwise call over the edges' channels side by side (the activated state is repeated once
  per edge, once per state) and one pointwise call grouped by edge;
* parameter-free operations (pooling, identity) run once per state instead of once per edge, and their
  α-weighted sums for all the state's edges are one batched matrix product ([E, K] weights times the K
  outputs): nothing is repeated per edge. Removing that repetition (3 products and 3 sums on E-times
  larger tensors per state) made an evaluation 0.89x as long;
* every convolution is a :class:`attacker.reconstruct.fast.frozenconv.FrozenConv`: its backward is a transposed
  convolution and vice versa, so each derivative order is one kernel call, on channels-last tensors
  where oneDNN's depthwise kernels are fast. The α weights of the convolutions are spread over each
  edge's channels ([n, E * C, 1, 1]), so the products run with long inner loops;
* every tensor stays channels-last in every derivative order (:mod:`attacker.reconstruct.fast.layout`): one NCHW
  gradient, from slicing or padding, made the products downstream mix layouts (0.92x once removed);
* the activation of a state is computed once and shared by every operation reading it (DARTS applies it
  inside each operation); ELU's backward reads its output, so no derivative order recomputes exp;
* 3x3 average pooling (count_include_pad=False) is a depthwise convolution with a ones kernel times the
  reciprocal window counts.

An earlier version fused each depthwise + pointwise pair into one dense convolution: fewer calls, but
up to 14x the multiplications; at 128 captures batched the convolutions were then 55 % of an iteration.
``archleak bench adra --compare-sequential`` times 32 captures batched against a loop over them.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from attacker.reconstruct.fast.frozenconv import FrozenConv
from attacker.reconstruct.fast.layout import (
    cat_channels,
    channels_last,
    repeat_channels,
    shift_up_left,
    split_channels,
)
from fednas.operations import ActConvBN, DilConv, FactorizedReduce, SepConv
from fednas.search_space import SupernetSpec
from fednas.supernet import SearchCell, SuperNet

Tensor = torch.Tensor


class SourceInputs:
    """A state as the operations on its E outgoing edges read it: raw (``h``), activated (``a``) and activated
    repeated once per edge (``a_edges``, [n, E * C, H, W]); each computed once, on first use."""

    def __init__(self, h: Tensor, act: Callable[[Tensor], Tensor], edges: int) -> None:
        self.h, self.act, self.edges = h, act, edges

    @cached_property
    def a(self) -> Tensor:
        return self.act(self.h)

    @cached_property
    def a_edges(self) -> Tensor:
        return repeat_channels(self.a, self.edges)


# inputs -> [n, E * C, H, W], the E edges leaving the state side by side, or [n, C, H, W] when the
# operation's output is the same on every edge (pooling, identity); channels-last
EdgesFn = Callable[[SourceInputs], Tensor]


def _window_counts(size: int, stride: int) -> Tensor:
    """How many of a 3x3 window's rows (or columns) lie inside ``size``, per output position (padding 1)."""
    centre = torch.arange(0, size, stride)
    return (centre + 1).clamp(max=size - 1) - (centre - 1).clamp(min=0) + 1


class AvgPool3x3:
    """3x3 average pooling with padding 1 and ``count_include_pad=False``: a depthwise convolution with a
    ones kernel (channels-last in every derivative order) times each window's reciprocal pixel count."""

    def __init__(self, stride: int) -> None:
        self.stride = stride
        self.built: dict[tuple[int, int, int, torch.dtype, torch.device], tuple[FrozenConv, Tensor]] = {}

    def __call__(self, x: Tensor) -> Tensor:
        c, (h, w) = x.shape[1], x.shape[-2:]
        key = (c, h, w, x.dtype, x.device)
        if key not in self.built:   # once per input geometry: the ones kernel and the reciprocal counts
            ones = torch.ones(c, 1, 3, 3, dtype=x.dtype, device=x.device)
            counts = _window_counts(h, self.stride)[:, None] * _window_counts(w, self.stride)[None, :]
            self.built[key] = FrozenConv(ones, self.stride, 1, 1, c), (1.0 / counts).to(x)
        conv, reciprocal = self.built[key]
        return conv(x) * reciprocal


# A supernet building block (nn.Sequential of a known layout, or one of fednas.operations' modules), read here by
# its layout: ``blocks[k][1].weight`` is the depthwise weight of a DilConv, and so on. Typed loosely on purpose.
Block = Any


class _ELU(torch.autograd.Function):
    """ELU whose backward reads its output rather than its input (``elu'(x) = y + alpha`` where x <= 0), so no
    derivative order evaluates the exponential again (PyTorch's ``F.elu`` backward does)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: float) -> Tensor:
        y = F.elu(x, alpha)
        ctx.alpha = alpha
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, ctx.alpha, 1, 1, True, y), None


def _activation(module: Block) -> Callable[[Tensor], Tensor]:
    if type(module) is nn.ELU:
        alpha = module.alpha
        return lambda x: _ELU.apply(x, alpha)
    return cast(Callable[[Tensor], Tensor], module)


def _norm(norms: Sequence[Block]) -> Callable[[Tensor], Tensor]:
    """The edges' normalisation (BatchNorm without affine, as built by the supernet) on an ``EdgesFn`` output."""
    first = norms[0]
    if not isinstance(first, nn.BatchNorm2d):
        return lambda t: t
    if first.training:  # batch statistics per channel: the same for every edge
        return lambda t: F.batch_norm(t, None, None, training=True, eps=first.eps)
    mean = torch.cat([m.running_mean for m in norms])
    var = torch.cat([m.running_var for m in norms])
    return lambda t: F.batch_norm(repeat_channels(t, len(mean) // t.shape[1]), mean, var, training=False,
                                  eps=first.eps)


def _separable(blocks: Sequence[Block]) -> Callable[[Tensor], Tensor]:
    """Depthwise then pointwise convolution of every edge's block (``DilConv`` layout: act, dw, pw, norm) on
    the edges' inputs side by side."""
    dw, e = blocks[0][1], len(blocks)
    depthwise = FrozenConv(torch.cat([b[1].weight for b in blocks]), dw.stride[0], dw.padding[0],
                           dw.dilation[0], e * dw.in_channels)
    pointwise = FrozenConv(torch.cat([b[2].weight for b in blocks]), groups=e)
    return lambda x: pointwise(depthwise(x))


def _dil_fn(blocks: Sequence[Block]) -> EdgesFn:
    """act -> dw -> pw -> norm on every edge."""
    conv, norm = _separable(blocks), _norm([b[3] for b in blocks])
    return lambda s: norm(conv(s.a_edges))


def _sep_fn(ops: Sequence[Block]) -> EdgesFn:
    """Two dil blocks: the first over the shared activated state, the second on each edge's own channels."""
    first = _dil_fn([o[0] for o in ops])
    blocks = [o[1] for o in ops]
    act = _activation(blocks[0][0])
    conv, norm = _separable(blocks), _norm([b[3] for b in blocks])
    return lambda s: norm(conv(act(first(s))))


def _factorized(ops: Sequence[FactorizedReduce]) -> Callable[[Tensor], Tensor]:
    """Every edge's two offset strided 1x1 convolutions as one convolution over [x, x shifted]: output
    channels edge by edge, each edge's ``conv_1`` half then its ``conv_2`` half."""
    rows = []
    for o in ops:
        w1, w2 = o.conv_1.weight, o.conv_2.weight
        rows += [torch.cat([w1, torch.zeros_like(w1)], 1), torch.cat([torch.zeros_like(w2), w2], 1)]
    conv = FrozenConv(torch.cat(rows), 2)

    def fn(a: Tensor) -> Tensor:
        return conv(cat_channels([a, shift_up_left(a)]))
    return fn


def _reduce_fn(ops: Sequence[FactorizedReduce]) -> EdgesFn:
    conv, norm = _factorized(ops), _norm([o.bn for o in ops])
    return lambda s: norm(conv(s.a))


def _edges_fn(ops: Sequence[Block]) -> EdgesFn:
    """One candidate operation on every edge leaving a state."""
    op = ops[0]
    if isinstance(op, SepConv):
        return _sep_fn(ops)
    if isinstance(op, DilConv):
        return _dil_fn(ops)
    if isinstance(op, FactorizedReduce):
        return _reduce_fn(ops)
    if isinstance(op, nn.Identity):
        return lambda s: s.h
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.AvgPool2d) and not op[0].count_include_pad:
        avg, norm = AvgPool3x3(int(cast(int, op[0].stride))), _norm([o[1] for o in ops])
        return lambda s: norm(avg(s.h))
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.MaxPool2d):
        maxpool, norm = op[0], _norm([o[1] for o in ops])
        return lambda s: norm(maxpool(channels_last(s.h)))   # CPU max pooling is 4-9x faster channels-last
    return lambda s: torch.cat([o(s.h) for o in ops], dim=1)  # any other registered operation, per edge


def _preprocess(module: Block) -> Callable[[Tensor], Tensor]:
    """A cell's input preprocessing (act -> 1x1 conv -> norm, or a factorized reduction) on frozen convs."""
    if isinstance(module, ActConvBN):
        act, frozen, norm = _activation(module[0]), FrozenConv(cast(Tensor, module[1].weight)), module[2]
        return lambda s: norm(frozen(act(s)))
    if isinstance(module, FactorizedReduce):
        act, conv, norm = _activation(module.act), _factorized([module]), module.bn
        return lambda s: norm(conv(act(s)))
    return cast(Callable[[Tensor], Tensor], module)


class FastSource:
    """Every edge leaving state ``j`` of a cell: targets (node indices), α rows, one function per operation."""

    def __init__(self, cell: SearchCell, j: int) -> None:
        offsets = [sum(m + 2 for m in range(i)) for i in range(cell.nodes)]
        self.targets = list(range(max(0, j - 1), cell.nodes))
        rows = [offsets[i] + j for i in self.targets]
        self.rows = torch.tensor(rows)
        mixed: list[Block] = [cell.edges[r] for r in rows]
        self.active = mixed[0].active
        self.ops = [_edges_fn([m.ops[k] for m in mixed]) for k in self.active]

    def __call__(self, h: Tensor, act: Callable[[Tensor], Tensor], weights: Tensor) -> list[Tensor]:
        """``weights``: [n, edges, ops] (per sample) or [edges, ops]; one [n, C, H, W] per target node."""
        e, c = len(self.targets), h.shape[1]
        inputs = SourceInputs(h, act, e)
        w = weights[..., self.rows, :].expand(h.shape[0], e, -1)   # [n, E, ops]
        per_edge: list[tuple[int, Tensor]] = []
        shared: list[tuple[int, Tensor]] = []
        for k, fn in zip(self.active, self.ops, strict=True):
            y = fn(inputs)
            (per_edge if y.shape[1] == e * c else shared).append((k, y))
        mixes = ([_mix_per_edge(w, per_edge, c)] if per_edge else []) + ([_mix_shared(w, shared)] if shared else [])
        return [functools.reduce(operator.add, parts) for parts in zip(*mixes, strict=True)]


def _mix_per_edge(w: Tensor, terms: Sequence[tuple[int, Tensor]], c: int) -> list[Tensor]:
    """Σ_k w[:, e, k] · y_k for outputs laid out edge by edge ([n, E * C, H, W]), split per edge.

    The weights are spread over each edge's channels, so every product is a channels-last tensor times a
    [n, E * C, 1, 1] one: dense kernels with long inner loops, in all derivative orders."""
    n, e = w.shape[:2]
    spread = w.repeat_interleave(c, dim=1)   # [n, E * C, ops]
    total: Tensor | None = None
    for k, y in terms:
        term = spread[..., k].reshape(n, e * c, 1, 1) * y
        total = term if total is None else total + term
    assert total is not None
    return list(split_channels(total, [c] * e))


def _mix_shared(w: Tensor, terms: Sequence[tuple[int, Tensor]]) -> list[Tensor]:
    """Σ_k w[:, e, k] · y_k for outputs shared by every edge ([n, C, H, W]: pooling, identity), one per edge.

    One batched matrix product, [E, K] weights times the K outputs flattened channels-last, so no output
    is ever repeated per edge: each edge's result is a channels-last view of the product."""
    n, c, h, wd = terms[0][1].shape
    stacked = torch.stack([channels_last(y).permute(0, 2, 3, 1).reshape(n, -1) for _, y in terms], dim=1)
    mixed = torch.bmm(w[..., [k for k, _ in terms]], stacked)   # [n, E, H * W * C]
    return [mixed[:, i].view(n, h, wd, c).permute(0, 3, 1, 2) for i in range(w.shape[1])]


class FastCell:
    def __init__(self, cell: SearchCell) -> None:
        self.nodes, self.act = cell.nodes, _activation(cell.preprocess1[0])
        self.pre0, self.pre1 = _preprocess(cell.preprocess0), _preprocess(cell.preprocess1)
        self.sources = [FastSource(cell, j) for j in range(cell.nodes + 1)]

    def __call__(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        pending: list[Tensor | None] = [None] * self.nodes
        for j, source in enumerate(self.sources):
            h = states[j]
            for i, part in zip(source.targets, source(h, self.act, weights), strict=True):
                before = pending[i]
                pending[i] = part if before is None else before + part
            if j >= 1:  # every edge into node j - 1 has now been added
                node = pending[j - 1]
                assert node is not None
                states.append(node)
        return cat_channels(states[2:])


class FastSuperNet(nn.Module):
    """``model``'s function, evaluated edge-batched (see the module docstring); ``model`` stays untouched."""

    def __init__(self, model: SuperNet) -> None:
        super().__init__()
        self.model = model
        self.cells = [FastCell(c) for c in cast(Sequence[SearchCell], model.cells)]
        conv: Block = model.stem[0]
        self.stem_conv = FrozenConv(conv.weight, conv.stride[0], conv.padding[0], conv.dilation[0], conv.groups)

    @property
    def spec(self) -> SupernetSpec:
        return self.model.spec

    def forward(self, x: Tensor, alphas: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits, as :meth:`fednas.supernet.SuperNet.forward` (α per group: [edges, ops] or [N, edges, ops])."""
        model = self.model
        source = model.alphas if alphas is None else alphas
        weights = {g: F.softmax(a, dim=-1) for g, a in source.items()}
        s0 = s1 = model.stem[1:](self.stem_conv((x - model.input_mean) / model.input_std))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[self.spec.alpha_group(i)])
        logits: Tensor = model.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return logits
