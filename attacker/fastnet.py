"""A faster evaluation of the same supernet function, for the attack's double backward on CPU.

Same weights, same outputs (tested against :class:`fednas.supernet.SuperNet` to 1e-5), cheaper second
derivatives. Measured per-op on CPU (double backward, one core), three changes pay off:

* the activation of a state is computed once per cell and shared by every separable and dilated
  operation reading that state (DARTS applies it inside each operation: 4 times per edge);
* dilated depthwise + pointwise pairs become one dense convolution (dilated depthwise convolutions
  are the slowest kernels; undilated pairs stay separable, which is faster for them);
* 3x3 average pooling (count_include_pad=False) is a sum of shifted slices times a constant count map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fednas.operations import DilConv, FactorizedReduce, SepConv, Zero
from fednas.search_space import SupernetSpec
from fednas.supernet import MixedOp, SearchCell, SuperNet

EdgeFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (state, activated state) -> output


def fuse_pair(dw: nn.Conv2d, pw: nn.Conv2d) -> nn.Conv2d:
    """One dense conv equal to ``pw(dw(x))`` (convolution is linear: ``W[o, i] = pw[o, i] * dw[i]``)."""
    dense = nn.Conv2d(dw.in_channels, pw.out_channels, dw.kernel_size, stride=dw.stride, padding=dw.padding,
                      dilation=dw.dilation, bias=False).to(dw.weight.device, dw.weight.dtype)
    with torch.no_grad():
        dense.weight.copy_(pw.weight[:, :, 0, 0].unsqueeze(-1).unsqueeze(-1) * dw.weight[:, 0].unsqueeze(0))
    dense.weight.requires_grad_(dw.weight.requires_grad and pw.weight.requires_grad)
    return dense


def _box_sum(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 window sums with zero padding 1 and the window's count of real pixels."""
    h, w = x.shape[-2:]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1

    def window(t: torch.Tensor) -> torch.Tensor:
        tp = F.pad(t, (1, 1, 1, 1))
        r = sum(tp[..., :, j:j + stride * (wo - 1) + 1:stride] for j in range(3))
        return sum(r[..., i:i + stride * (ho - 1) + 1:stride, :] for i in range(3))

    ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
    return window(x), window(ones)


def avg_pool_3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    total, count = _box_sum(x, stride)
    return total / count


def _dil_fn(block: DilConv, with_act: bool) -> EdgeFn:
    act, dw, pw, norm = list(block)
    if dw.dilation[0] > 1:
        dense = fuse_pair(dw, pw)
        body: Callable[[torch.Tensor], torch.Tensor] = dense
    else:
        def body(t: torch.Tensor) -> torch.Tensor:
            return pw(dw(t))
    if with_act:
        return lambda h, a: norm(body(act(h)))
    return lambda h, a: norm(body(a))


def _edge_fns(mixed: MixedOp) -> list[tuple[int, EdgeFn]]:
    fns: list[tuple[int, EdgeFn]] = []
    for k in mixed.active:
        op = mixed.ops[k]
        fns.append((k, _op_fn(op)))
    return fns


def _op_fn(op: nn.Module) -> EdgeFn:
    if isinstance(op, SepConv):
        first, second = _dil_fn(op[0], False), _dil_fn(op[1], True)
        return lambda h, a: second(first(h, a), a)
    if isinstance(op, DilConv):
        return _dil_fn(op, False)
    if isinstance(op, nn.Identity):
        return lambda h, a: h
    if isinstance(op, FactorizedReduce):
        return lambda h, a: op.bn(torch.cat([op.conv_1(a), op.conv_2(F.pad(a, (0, 1, 0, 1))[:, :, 1:, 1:])], 1))
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.AvgPool2d) and not op[0].count_include_pad:
        stride, norm = int(op[0].stride), op[1]
        return lambda h, a: norm(avg_pool_3x3(h, stride))
    if isinstance(op, Zero):
        raise TypeError("the zero operation is never evaluated")
    return lambda h, a: op(h)


class FastCell(nn.Module):
    def __init__(self, cell: SearchCell, act: nn.Module) -> None:
        super().__init__()
        self.cell, self.act = cell, act
        self.edges = [_edge_fns(m) for m in cell.edges]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.cell.preprocess0(s0), self.cell.preprocess1(s1)]
        acts = [self.act(s) for s in states]
        offset = 0
        for _ in range(self.cell.nodes):
            node = None
            for j, (h, a) in enumerate(zip(states, acts, strict=True)):
                w = weights[..., offset + j, :]
                w = w.t().reshape(w.shape[-1], -1, 1, 1, 1) if w.ndim == 2 else w
                for k, fn in self.edges[offset + j]:
                    term = w[k] * fn(h, a)
                    node = term if node is None else node + term
            offset += len(states)
            assert node is not None
            states.append(node)
            acts.append(self.act(node))
        return torch.cat(states[2:], dim=1)


class FastSuperNet(nn.Module):
    """``FastSuperNet(model)(x, alphas)`` equals ``model(x, alphas)``; weights are shared, not copied."""

    def __init__(self, model: SuperNet) -> None:
        super().__init__()
        self.model = model
        act = model.cells[0].preprocess1[0]  # every activation module of a supernet is the same function
        self.cells = [FastCell(c, act) for c in model.cells]

    @property
    def spec(self) -> SupernetSpec:
        return self.model.spec

    def forward(self, x: torch.Tensor, alphas: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        m = self.model
        source = m.alphas if alphas is None else alphas
        weights = {g: F.softmax(a, dim=-1) for g, a in source.items()}
        s0 = s1 = m.stem((x - m.input_mean) / m.input_std)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[m.spec.alpha_group(i)])
        return m.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
