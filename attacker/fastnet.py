"""A faster evaluation of the supernet function for the attack's double backward on CPU.

``FastSuperNet([m_1, ..., m_R])(x, alphas)`` evaluates R supernets that share a spec but not their weights
(for instance one broadcast θ per round) in one pass: the input holds R equal groups of samples, group r
goes through model r. Channels of the R models are stacked and every convolution becomes a grouped one,
so one kernel call serves all models. With one model it is simply a faster supernet. Outputs and second
derivatives equal :class:`fednas.supernet.SuperNet` per model (tested to 1e-5).

Measured per operation on CPU (double backward, one core), these changes pay off:

* the activation of a state is computed once per cell and shared by every separable and dilated
  operation reading that state (DARTS applies it inside each operation: 4 times per edge);
* dilated depthwise + pointwise pairs become one dense convolution (dilated depthwise convolutions are
  the slowest kernels; undilated pairs stay separable, which is faster for them);
* 3x3 average pooling (count_include_pad=False) is a sum of shifted slices times a constant count map;
* many models and many samples per call: small batches are dominated by per-operation overhead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fednas.operations import DilConv, FactorizedReduce, SepConv, Zero
from fednas.search_space import SupernetSpec
from fednas.supernet import SuperNet

Tensor = torch.Tensor
EdgeFn = Callable[[Tensor, Tensor], Tensor]  # (state, activated state) -> output, stacked layout


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


class Stack:
    """R models' parameters side by side; helpers for the stacked layout [n, R*C, H, W]."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.r = len(models)

    def weight(self, convs: Sequence[nn.Conv2d]) -> Tensor:
        return torch.cat([c.weight.detach() for c in convs])

    def conv(self, convs: Sequence[nn.Conv2d], weight: Tensor | None = None,
             groups: int | None = None) -> Callable[[Tensor], Tensor]:
        """Grouped conv over the stacked channels (``weight``/``groups``: a replacement per-model kernel)."""
        c = convs[0]
        w = self.weight(convs) if weight is None else weight
        groups = (c.groups if groups is None else groups) * self.r
        return lambda x: F.conv2d(x, w, None, c.stride, c.padding, c.dilation, groups)

    def cat(self, parts: Sequence[Tensor]) -> Tensor:
        """Channel concatenation per model: [n, R*a], [n, R*b] -> [n, R*(a+b)]."""
        if self.r == 1:
            return torch.cat(list(parts), dim=1)
        n, _, h, w = parts[0].shape
        return torch.cat([p.view(n, self.r, -1, h, w) for p in parts], dim=2).view(n, -1, h, w)


def _norm(norms: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    if isinstance(norms[0], nn.Identity):
        return lambda t: t
    if len(norms) > 1:
        raise ValueError("BatchNorm supernets are evaluated one model at a time")
    return norms[0]


def _dil_fn(stack: Stack, blocks: Sequence[DilConv], with_act: bool) -> EdgeFn:
    act, dws, pws, norm = blocks[0][0], [b[1] for b in blocks], [b[2] for b in blocks], _norm([b[3] for b in blocks])
    if dws[0].dilation[0] > 1:
        dense = stack.conv(dws, torch.cat([fuse_pair(d, p) for d, p in zip(dws, pws, strict=True)]), groups=1)
        body: Callable[[Tensor], Tensor] = dense
    else:
        dw, pw = stack.conv(dws), stack.conv(pws)

        def body(t: Tensor) -> Tensor:
            return pw(dw(t))
    if with_act:
        return lambda h, a: norm(body(act(h)))
    return lambda h, a: norm(body(a))


def _op_fn(stack: Stack, ops: Sequence[nn.Module]) -> EdgeFn:
    op = ops[0]
    if isinstance(op, SepConv):
        first = _dil_fn(stack, [o[0] for o in ops], False)
        second = _dil_fn(stack, [o[1] for o in ops], True)
        return lambda h, a: second(first(h, a), a)
    if isinstance(op, DilConv):
        return _dil_fn(stack, ops, False)
    if isinstance(op, nn.Identity):
        return lambda h, a: h
    if isinstance(op, FactorizedReduce):
        c1, c2 = stack.conv([o.conv_1 for o in ops]), stack.conv([o.conv_2 for o in ops])
        norm = _norm([o.bn for o in ops])
        return lambda h, a: norm(stack.cat([c1(a), c2(F.pad(a, (0, 1, 0, 1))[:, :, 1:, 1:])]))
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.AvgPool2d) and not op[0].count_include_pad:
        stride, norm = int(op[0].stride), _norm([o[1] for o in ops])
        return lambda h, a: norm(avg_pool_3x3(h, stride))
    if isinstance(op, nn.Sequential) and isinstance(op[0], nn.MaxPool2d):
        pool, norm = op[0], _norm([o[1] for o in ops])
        return lambda h, a: norm(pool(h))
    if isinstance(op, Zero):
        raise TypeError("the zero operation is never evaluated")
    raise TypeError(f"no fast path for {op.__class__.__name__}")


def _preprocess(stack: Stack, mods: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    if isinstance(mods[0], FactorizedReduce):
        fn = _op_fn(stack, mods)
        act = mods[0].act
        return lambda s: fn(s, act(s))
    act, conv, norm = mods[0][0], stack.conv([m[1] for m in mods]), _norm([m[2] for m in mods])
    return lambda s: norm(conv(act(s)))


class FastCell:
    def __init__(self, stack: Stack, cells: Sequence[nn.Module]) -> None:
        cell = cells[0]
        self.stack, self.nodes, self.act = stack, cell.nodes, cell.preprocess1[0]
        self.pre0 = _preprocess(stack, [c.preprocess0 for c in cells])
        self.pre1 = _preprocess(stack, [c.preprocess1 for c in cells])
        self.edges = [[(k, _op_fn(stack, [c.edges[e].ops[k] for c in cells])) for k in cell.edges[e].active]
                      for e in range(len(cell.edges))]

    def __call__(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        """``weights``: [n, R, edges, ops] (per sample) or [edges, ops] (shared)."""
        states = [self.pre0(s0), self.pre1(s1)]
        acts = [self.act(s) for s in states]
        offset = 0
        for _ in range(self.nodes):
            node = None
            for j, (h, a) in enumerate(zip(states, acts, strict=True)):
                n = h.shape[0]
                for k, fn in self.edges[offset + j]:
                    w = weights[..., offset + j, k]
                    out = fn(h, a)
                    if w.ndim == 0:
                        term = w * out
                    else:
                        stacked = out.reshape(n, self.stack.r, -1, *out.shape[-2:])
                        term = (w.reshape(n, self.stack.r, 1, 1, 1) * stacked).reshape(out.shape)
                    node = term if node is None else node + term
            offset += len(states)
            assert node is not None
            states.append(node)
            acts.append(self.act(node))
        return self.stack.cat(states[2:])


class FastSuperNet(nn.Module):
    """R supernets with one spec, evaluated together (see the module docstring)."""

    def __init__(self, models: SuperNet | Sequence[SuperNet]) -> None:
        super().__init__()
        models = [models] if isinstance(models, SuperNet) else list(models)
        if any(m.spec != models[0].spec for m in models):
            raise ValueError("FastSuperNet needs models with one spec")
        self.models = models
        self.stack = Stack(models)
        first = models[0]
        self.stem = self.stack.conv([m.stem[0] for m in models])
        self.stem_norm = _norm([m.stem[1] for m in models])
        self.cells = [FastCell(self.stack, [m.cells[i] for m in models]) for i in range(len(first.cells))]
        self.mean, self.std = first.input_mean, first.input_std
        self.fc_w = torch.stack([m.classifier.weight.detach() for m in models])   # [R, O, C]
        self.fc_b = torch.stack([m.classifier.bias.detach() for m in models])     # [R, O]

    @property
    def spec(self) -> SupernetSpec:
        return self.models[0].spec

    def forward(self, x: Tensor, alphas: Mapping[str, Tensor] | None = None) -> Tensor:
        """``x``: [R*n, C, H, W], model-major (the first n samples go through model 0); logits [R*n, classes]."""
        r = self.stack.r
        n = x.shape[0] // r
        source = self.models[0].alphas if alphas is None else alphas
        weights = {}
        for g, a in source.items():
            w = F.softmax(a, dim=-1)
            weights[g] = w if w.ndim == 2 else w.view(r, n, *w.shape[1:]).transpose(0, 1)
        z = ((x - self.mean) / self.std).view(r, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, *x.shape[2:])
        s0 = s1 = self.stem_norm(self.stem(z))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[self.spec.alpha_group(i)])
        feats = F.adaptive_avg_pool2d(s1, 1).flatten(1).view(n, r, -1)
        logits = torch.einsum("nrc,roc->nro", feats, self.fc_w) + self.fc_b
        return logits.transpose(0, 1).reshape(r * n, -1)
