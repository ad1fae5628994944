"""The DARTS supernet: mixed edges weighted by softmax(α), cells, and the network.

Inputs are images in [0, 1]; the network normalises them itself, so attacks can work in pixel space.
α lives in ``SuperNet.alphas`` (one tensor per α group); everything else is the weights θ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fednas.operations import ACTIVATIONS, OPS, ActConvBN, FactorizedReduce
from fednas.search_space import CellGenotype, Genotype, SupernetSpec


class MixedOp(nn.Module):
    """One edge: the softmax(α)-weighted sum of every candidate operation (``none`` adds nothing).

    Operations in ``off`` (pruned by PDARTS, whose α there is :data:`fednas.methods.child.OFF`: weight exactly zero)
    are not computed: their term and α gradient are zero either way. ``skip_dropout`` (PDARTS) drops the skip
    connection's output element-wise with rate p while training, from the given generator."""

    def __init__(self, spec: SupernetSpec, channels: int, stride: int) -> None:
        super().__init__()
        act = ACTIVATIONS.get(spec.activation)
        self.ops = nn.ModuleList(OPS.get(p)(channels, stride, act, spec.batchnorm)
                                 for p in spec.primitives)
        self.active = [i for i, p in enumerate(spec.primitives) if p != "none"]
        self.skip = spec.primitives.index("skip_connect") if "skip_connect" in spec.primitives else -1
        self.skip_dropout: tuple[float, torch.Generator] | None = None
        self.off: frozenset[int] = frozenset()

    def _term(self, i: int, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.ops[i](x)
        if i == self.skip and self.skip_dropout is not None and self.training and self.skip_dropout[0] > 0:
            p, gen = self.skip_dropout
            keep = torch.empty(y.shape, dtype=y.dtype).bernoulli_(1 - p, generator=gen).to(y.device)
            y = y * keep / (1 - p)
        return y

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``weights`` is [ops] (one architecture) or [N, ops] (one architecture per sample)."""
        if weights.ndim == 2:
            weights = weights.t().reshape(weights.shape[1], -1, 1, 1, 1)
        out: torch.Tensor | None = None
        for i in self.active:
            if i in self.off:
                continue
            term = weights[i] * self._term(i, x)
            out = term if out is None else out + term
        if out is None:   # every real operation is off: the edge adds nothing (an exact zero of the right shape)
            out = weights[self.active[0]] * self.ops[self.active[0]](x)
        return out


class SearchCell(nn.Module):
    """A DARTS cell with ``spec.nodes`` intermediate nodes, each summing all earlier states."""

    def __init__(self, spec: SupernetSpec, c_pp: int, c_p: int, channels: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        act = ACTIVATIONS.get(spec.activation)
        bn = spec.batchnorm
        self.reduction = reduction
        self.nodes = spec.nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, channels, act, bn)
        else:
            self.preprocess0 = ActConvBN(c_pp, channels, 1, 1, 0, act, bn)
        self.preprocess1 = ActConvBN(c_p, channels, 1, 1, 0, act, bn)
        self.edges = nn.ModuleList()
        for node in range(spec.nodes):
            for src in range(2 + node):
                stride = 2 if reduction and src < 2 else 1
                self.edges.append(MixedOp(spec, channels, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            node = sum(self.edges[offset + j](h, weights[..., offset + j, :]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """Stem, ``spec.cells`` search cells, global pooling and a linear classifier."""

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, spec: SupernetSpec, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != spec.in_channels or len(std) != spec.in_channels:
            raise ValueError(f"mean/std need {spec.in_channels} entries (one per input channel)")
        self.spec = spec
        shape = (1, spec.in_channels, 1, 1)
        self.register_buffer("input_mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(shape), persistent=False)
        c_curr = spec.stem_multiplier * spec.channels
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, c_curr, 3, stride=spec.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c_curr) if spec.batchnorm else nn.Identity(),
        )
        c_pp, c_p, c_curr = c_curr, c_curr, spec.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(spec.cells):
            reduction = spec.is_reduction(i)
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(spec, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, spec.nodes * c_curr
        self.classifier = nn.Linear(c_p, spec.num_classes)
        rows, cols = spec.alpha_shape()
        self.alphas = nn.ParameterDict(
            {g: nn.Parameter(torch.zeros(rows, cols)) for g in spec.alpha_groups()}
        )

    def forward(self, x: torch.Tensor, alphas: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits. ``alphas`` overrides the model's α: each group [edges, ops], or [N, edges, ops] to give
        every sample its own architecture (per-sample α gradients in one backward pass)."""
        source = self.alphas if alphas is None else alphas
        weights = {g: F.softmax(a, dim=-1) for g, a in source.items()}
        s0 = s1 = self.stem((x - self.input_mean) / self.input_std)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, weights[self.spec.alpha_group(i)])
        out = F.adaptive_avg_pool2d(s1, 1).flatten(1)
        logits: torch.Tensor = self.classifier(out)
        return logits

    def alpha_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alphas.")]

    def genotype(self) -> Genotype:
        return derive_genotype({g: F.softmax(a.detach(), dim=-1) for g, a in self.alphas.items()},
                               self.spec)


def derive_cell(weights: torch.Tensor, nodes: int, primitives: Sequence[str]) -> CellGenotype:
    """DARTS rule: per node keep the 2 incoming edges whose best non-``none`` weight is largest."""
    candidates = [k for k, p in enumerate(primitives) if p != "none"]
    w = weights.detach().cpu().tolist()
    edges: list[tuple[str, int]] = []
    offset = 0
    for node in range(nodes):
        n_in = 2 + node
        rows = w[offset:offset + n_in]
        best = [max(candidates, key=lambda k: row[k]) for row in rows]
        top = sorted(range(n_in), key=lambda j: -rows[j][best[j]])[:2]
        edges.extend((primitives[best[j]], j) for j in sorted(top))
        offset += n_in
    return CellGenotype(edges=tuple(edges), concat=tuple(range(2, 2 + nodes)))


def derive_genotype(weights: Mapping[str, torch.Tensor], spec: SupernetSpec) -> Genotype:
    """Genotype from softmax(α) of every group."""
    return Genotype(groups=tuple(
        (g, derive_cell(weights[g], spec.nodes, spec.primitives)) for g in spec.alpha_groups()
    ))


def init_supernet(model: SuperNet, generator: torch.Generator, alpha_scale: float = 1e-3) -> None:
    """Seeded initialisation: He-normal convs (so the signal survives without BatchNorm), PyTorch's
    default linear layer, α ~ alpha_scale·N(0, 1) (DARTS)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                if module.affine:
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        for alpha in model.alphas.values():
            alpha.copy_(alpha_scale * torch.randn(alpha.shape, generator=generator))


def build_supernet(spec: SupernetSpec, mean: Sequence[float], std: Sequence[float],
                   generator: torch.Generator, device: torch.device | str = "cpu") -> SuperNet:
    """Build and initialise a supernet on ``device`` (initialised on CPU, so results match across devices)."""
    model = SuperNet(spec, mean, std)
    init_supernet(model, generator)
    return model.to(device)
