"""A faster evaluation of the supernet for the local search: the same function, edge-batched, channels-last.

``FastSearchNet(model)(x, alphas)`` computes ``model(x, alphas)`` with the model's own, live parameters, so
gradients reach every θ and α tensor of ``model`` as they would through its plain forward (tested to 1e-5 in
float64, losses and gradients, on every supernet geometry the tests use). What changes:

* every edge leaving a state is evaluated together: one candidate operation's depthwise convolutions on all
  those edges are one grouped call over the edges' channels side by side (the per-edge weights concatenated
  at each call, so autograd hands each edge its own gradient), its pointwise convolutions one call grouped by
  edge, and a factorized reduction's two offset 1x1 convolutions one call for every edge;
* parameter-free operations (pooling, identity) run once per state instead of once per edge, and their
  α-weighted sums for all the state's edges are one batched matrix product;
* the activation of a state is computed once and shared by every operation reading it (DARTS applies it inside
  each operation);
* every tensor is channels-last, where oneDNN's depthwise and grouped pointwise kernels (forward and backward,
  weight gradients included) are fastest on the CPU.

BatchNorm (``batchnorm = true``) keeps one set of running statistics per edge, which a shared evaluation would
not update: :func:`search_net` then returns the plain model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from fednas.convolution import channels_last, conv2d, dilated_conv2d
from fednas.operations import ActConvBN, DilConv, FactorizedReduce, SepConv
from fednas.rows import is_rows, row_linear
from fednas.supernet import SearchCell, SuperNet

Tensor = torch.Tensor
Block = Any   # a supernet building block read by its layout (nn.Sequential of a known shape), typed loosely


class Weights:
    """How the fast path reads θ: live (gradients flow to every parameter) or detached, when only α is trained
    (the α step), so that no weight gradient is computed for nothing."""

    def __init__(self) -> None:
        self.frozen = False

    def __call__(self, weights: Sequence[Tensor]) -> Tensor:
        out = torch.cat(list(weights), dim=-4) if len(weights) > 1 else weights[0]   # row weights: [R, ...]
        return out.detach() if self.frozen else out


class StateInputs:
    """A state as the operations on its E outgoing edges read it: raw (``h``), activated (``a``), and activated
    and repeated once per edge (``a_edges``, [n, E·C, H, W]); each computed once, on first use."""

    def __init__(self, h: Tensor, act: nn.Module, edges: int) -> None:
        self.h, self.act, self.edges = h, act, edges

    @cached_property
    def a(self) -> Tensor:
        out: Tensor = self.act(self.h)
        return out

    @cached_property
    def a_edges(self) -> Tensor:
        return channels_last(self.a.repeat(1, self.edges, 1, 1))


# inputs -> [n, E·C, H', W'] (the E edges side by side), or [n, C, H', W'] when every edge gives the same
EdgesFn = Callable[[StateInputs], Tensor]


def _separable(blocks: Sequence[Block], x: Tensor, weights: Weights) -> Tensor:
    """Every edge's depthwise then pointwise convolution (``DilConv`` layout: act, dw, pw, norm)."""
    dw, e = blocks[0][1], len(blocks)
    y = dilated_conv2d(x, weights([b[1].weight for b in blocks]), dw.stride[0], dw.padding[0], dw.dilation[0],
                       e * dw.in_channels)
    return conv2d(y, weights([b[2].weight for b in blocks]), groups=e)


def _dil_fn(blocks: Sequence[Block], weights: Weights) -> EdgesFn:
    return lambda s: _separable(blocks, s.a_edges, weights)


def _sep_fn(ops: Sequence[Block], weights: Weights) -> EdgesFn:
    """Two dil blocks: the first over the shared activated state, the second on each edge's own channels."""
    first, second = [o[0] for o in ops], [o[1] for o in ops]
    act = second[0][0]
    return lambda s: _separable(second, act(_separable(first, s.a_edges, weights)), weights)


def _factorized(ops: Sequence[FactorizedReduce], a: Tensor, weights: Weights) -> Tensor:
    """Every edge's two offset strided 1x1 convolutions as one convolution over [a, a shifted]: output channels
    edge by edge, each edge's ``conv_1`` half then its ``conv_2`` half."""
    rows = []
    for o in ops:
        w1, w2 = o.conv_1.weight, o.conv_2.weight
        rows += [torch.cat([w1, torch.zeros_like(w1)], -3), torch.cat([torch.zeros_like(w2), w2], -3)]
    shifted = F.pad(a, (0, 1, 0, 1))[:, :, 1:, 1:]
    return conv2d(torch.cat([a, shifted], 1), weights(rows), 2)


def _edges_fn(ops: Sequence[Block], weights: Weights) -> EdgesFn:
    """One candidate operation on every edge leaving a state."""
    op = ops[0]
    if isinstance(op, SepConv):
        return _sep_fn(ops, weights)
    if isinstance(op, DilConv):
        return _dil_fn(ops, weights)
    if isinstance(op, FactorizedReduce):
        reduce_ops = cast(Sequence[FactorizedReduce], ops)
        return lambda s: _factorized(reduce_ops, s.a, weights)
    if isinstance(op, nn.Identity):
        return lambda s: s.h
    if isinstance(op, nn.Sequential) and isinstance(op[0], (nn.AvgPool2d, nn.MaxPool2d)):
        pool = op[0]
        return lambda s: pool(s.h)
    return lambda s: torch.cat([o(s.h) for o in ops], dim=1)   # any other registered operation, per edge


class FastSource:
    """Every edge leaving state ``j`` of a cell: targets (node indices), α rows, one function per operation."""

    def __init__(self, cell: SearchCell, j: int, weights: Weights) -> None:
        offsets = [sum(m + 2 for m in range(i)) for i in range(cell.nodes)]
        self.targets = list(range(max(0, j - 1), cell.nodes))
        rows = [offsets[i] + j for i in self.targets]
        self.rows = torch.tensor(rows)
        mixed: list[Block] = [cell.edges[r] for r in rows]
        self.active: list[int] = mixed[0].active
        self.ops = [_edges_fn([m.ops[k] for m in mixed], weights) for k in self.active]

    def __call__(self, h: Tensor, act: nn.Module, weights: Tensor) -> list[Tensor]:
        """``weights``: [n, edges, ops] (per sample) or [edges, ops]; one [n, C, H, W] per target node."""
        e, c = len(self.targets), h.shape[1]
        inputs = StateInputs(h, act, e)
        w = weights[..., self.rows, :].expand(h.shape[0], e, -1)   # [n, E, ops]
        per_edge: list[tuple[int, Tensor]] = []
        shared: list[tuple[int, Tensor]] = []
        for k, fn in zip(self.active, self.ops, strict=True):
            y = fn(inputs)
            (per_edge if y.shape[1] == e * c else shared).append((k, y))
        parts = []
        if per_edge:
            parts.append(_mix_per_edge(w, per_edge, c))
        if shared:
            parts.append(_mix_shared(w, shared))
        return [p[0] if len(p) == 1 else p[0] + p[1] for p in zip(*parts, strict=True)]


def _mix_per_edge(w: Tensor, terms: Sequence[tuple[int, Tensor]], c: int) -> list[Tensor]:
    """Σ_k w[:, e, k] · y_k for outputs laid out edge by edge ([n, E·C, H, W]), split per edge."""
    n, e = w.shape[:2]
    spread = w.repeat_interleave(c, dim=1)   # [n, E·C, ops]
    total = spread[..., terms[0][0]].reshape(n, e * c, 1, 1) * terms[0][1]
    for k, y in terms[1:]:
        total = total + spread[..., k].reshape(n, e * c, 1, 1) * y
    return list(total.split(c, dim=1))


def _mix_shared(w: Tensor, terms: Sequence[tuple[int, Tensor]]) -> list[Tensor]:
    """Σ_k w[:, e, k] · y_k for outputs shared by every edge ([n, C, H, W]), one per edge: one batched matrix
    product of the [E, K] weights and the K outputs flattened channels-last."""
    n, c, h, wd = terms[0][1].shape
    stacked = torch.stack([channels_last(y).permute(0, 2, 3, 1).reshape(n, -1) for _, y in terms], dim=1)
    mixed = torch.bmm(w[..., [k for k, _ in terms]], stacked)   # [n, E, H·W·C]
    return [mixed[:, i].view(n, h, wd, c).permute(0, 3, 1, 2) for i in range(w.shape[1])]


def _preprocess(module: Block, weights: Weights) -> Callable[[Tensor], Tensor]:
    """A cell's input preprocessing: act -> 1x1 conv -> norm, or a factorized reduction."""
    if isinstance(module, ActConvBN):
        act, conv, norm = module[0], module[1], module[2]
        return lambda s: norm(conv2d(act(s), weights([cast(Tensor, conv.weight)])))
    reduce = cast(FactorizedReduce, module)
    return lambda s: reduce.bn(_factorized([reduce], reduce.act(s), weights))


class FastCell:
    def __init__(self, cell: SearchCell, weights: Weights) -> None:
        self.nodes = cell.nodes
        self.act: nn.Module = cell.preprocess1[0]
        self.pre0, self.pre1 = _preprocess(cell.preprocess0, weights), _preprocess(cell.preprocess1, weights)
        self.sources = [FastSource(cell, j, weights) for j in range(cell.nodes + 1)]

    def __call__(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states: list[Tensor] = [self.pre0(s0), self.pre1(s1)]
        pending: list[Tensor | None] = [None] * self.nodes
        for j, source in enumerate(self.sources):
            for i, part in zip(source.targets, source(states[j], self.act, weights), strict=True):
                before = pending[i]
                pending[i] = part if before is None else before + part
            if j >= 1:  # every edge into node j - 1 has now been added
                node = pending[j - 1]
                assert node is not None
                states.append(node)
        return channels_last(torch.cat(states[2:], dim=1))


class FastSearchNet(nn.Module):
    """``model``'s function with ``model``'s live parameters, evaluated edge-batched (see the module docstring)."""

    def __init__(self, model: SuperNet) -> None:
        super().__init__()
        if model.spec.batchnorm:
            raise ValueError("FastSearchNet needs a supernet without BatchNorm (per-edge running statistics)")
        self.model = model
        self.weights = Weights()
        self.cells = [FastCell(c, self.weights) for c in cast(Sequence[SearchCell], model.cells)]

    def forward(self, x: Tensor, alphas: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits, as :meth:`fednas.supernet.SuperNet.forward` (α per group: [edges, ops] or [N, edges, ops])."""
        model = self.model
        source = model.alphas if alphas is None else alphas
        weights = {g: F.softmax(a, dim=-1) for g, a in source.items()}
        stem: Block = model.stem[0]
        s0 = s1 = model.stem[1](conv2d((x - model.input_mean) / model.input_std, self.weights([stem.weight]),
                                       stem.stride[0], stem.padding[0]))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[model.spec.alpha_group(i)])
        pooled, classifier = F.adaptive_avg_pool2d(s1, 1).flatten(1), model.classifier
        if is_rows(classifier.weight, 2):
            return row_linear(pooled, classifier.weight, classifier.bias)
        logits: Tensor = classifier(pooled)
        return logits


def search_net(model: SuperNet, fast: bool = True) -> nn.Module:
    """What the local search evaluates: the fast path over ``model`` (the same function), or ``model`` itself when
    ``fast`` is off or the supernet has BatchNorm."""
    return FastSearchNet(model) if fast and not model.spec.batchnorm else model


@contextlib.contextmanager
def frozen_weights(net: nn.Module) -> Iterator[None]:
    """Inside the block the fast path reads θ detached (only α is trained: no weight gradient is computed)."""
    if not isinstance(net, FastSearchNet):
        yield
        return
    net.weights.frozen = True
    try:
        yield
    finally:
        net.weights.frozen = False
