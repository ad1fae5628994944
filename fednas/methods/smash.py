"""SMASH (Brock et al., 2018) on the DARTS search space: a hypernetwork generates the weights of a sampled
architecture from its encoding; it trains on D^θ over random architectures; candidates are ranked on D^α with
generated weights and the best is kept.

As in SMASH, the generated weights are the 1×1 convolutions of the operations (every pointwise convolution and
the factorized reductions' 1×1 convolutions on every edge); the other weights (stem, pre-processing, depthwise
kernels, classifier) are learned directly. The hypernetwork reads the architecture's one-hot encoding (one row per
edge, one column per operation, every α group), maps it to a code of ``smash-hidden`` numbers with a two-layer
perceptron, and a linear head per generated tensor turns the code into that tensor: W = A·z + b.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fednas.methods.child import OFF, CellChoice, child_forward, encode
from fednas.supernet import SuperNet


def generated_slots(model: SuperNet) -> dict[str, tuple[int, ...]]:
    """The θ tensors SMASH generates: every 1×1 convolution inside an edge's operations, by parameter name."""
    slots = {}
    for name, module in model.named_modules():
        if (".edges." in f".{name}." and isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                and module.groups == 1):
            slots[f"{name}.weight"] = tuple(module.weight.shape)
    return slots


def _edge_op(name: str) -> tuple[int, int, int]:
    """(cell, edge, op) of a slot name ``cells.C.edges.E.ops.K...``."""
    parts = name.split(".")
    return int(parts[1]), int(parts[3]), int(parts[5])


class HyperNet(nn.Module):
    """Architecture encoding → the generated 1×1 convolution weights of that architecture."""

    def __init__(self, model: SuperNet, hidden: int = 8) -> None:
        super().__init__()
        self.spec = model.spec
        rows, cols = self.spec.alpha_shape()
        self.slots = generated_slots(model)
        self.offsets: dict[str, tuple[int, int]] = {}
        total = 0
        for name, shape in self.slots.items():
            size = int(torch.Size(shape).numel())
            self.offsets[name] = (total, total + size)
            total += size
        self.encoder = nn.Sequential(nn.Linear(len(self.spec.alpha_groups()) * rows * cols, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Parameter(torch.zeros(total, hidden))
        self.bias = nn.Parameter(torch.zeros(total))

    def reset_parameters(self, model: SuperNet, generator: torch.Generator, head_scale: float = 0.1) -> None:
        """The bias starts at the supernet's own (He-normal) weights, the head small: at the start every
        architecture gets about the supernet's weights, and the head learns how they depend on it."""
        with torch.no_grad():
            for layer in self.encoder:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / layer.in_features ** 0.5
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
            weights = dict(model.named_parameters())
            for name, (lo, hi) in self.offsets.items():
                self.bias[lo:hi] = weights[name].detach().flatten()
                fan_in = weights[name][0].numel()
                self.head[lo:hi] = torch.randn(hi - lo, self.head.shape[1], generator=generator) * (
                    head_scale * (2.0 / fan_in) ** 0.5 / self.head.shape[1] ** 0.5)

    def code(self, child: Mapping[str, CellChoice]) -> torch.Tensor:
        encoding = torch.cat([(a > OFF / 2).float().flatten() for a in encode(child, self.spec).values()])
        out: torch.Tensor = self.encoder(encoding.to(self.head.device))
        return out

    def generate(self, child: Mapping[str, CellChoice]) -> dict[str, torch.Tensor]:
        """The generated tensors the child uses (the 1×1 convolutions of its chosen operations)."""
        z = self.code(child)
        used: set[tuple[int, int, int]] = set()
        for cell in range(self.spec.cells):
            offset = 0
            for node, pairs in enumerate(child[self.spec.alpha_group(cell)]):
                used.update((cell, offset + src, op) for src, op in pairs)
                offset += 2 + node
        out = {}
        for name, (lo, hi) in self.offsets.items():
            if _edge_op(name) in used:
                out[name] = (self.head[lo:hi] @ z + self.bias[lo:hi]).view(self.slots[name])
        return out


class _Child(nn.Module):
    """The supernet seen as one child: ``functional_call`` swaps in the generated tensors by name."""

    def __init__(self, model: SuperNet) -> None:
        super().__init__()
        self.net = model

    def forward(self, x: torch.Tensor, child: Mapping[str, CellChoice]) -> torch.Tensor:
        return child_forward(self.net, x, child)


def smash_forward(model: SuperNet, hyper: HyperNet, x: torch.Tensor, child: Mapping[str, CellChoice]
                  ) -> torch.Tensor:
    """Logits of ``child`` with its 1×1 convolutions generated by ``hyper`` (gradients reach both)."""
    generated = {f"net.{name}": weight for name, weight in hyper.generate(child).items()}
    out: torch.Tensor = torch.func.functional_call(_Child(model), generated, (x, child), strict=False)
    return out


def materialise(model: SuperNet, hyper: HyperNet, child: Mapping[str, CellChoice]) -> None:
    """Write the child's generated weights into the supernet's θ (and its encoding into α): the supernet is then
    the child with SMASH's weights, servable like any model."""
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, weight in hyper.generate(child).items():
            params[name].copy_(weight)
        for group, alpha in encode(child, model.spec).items():
            model.alphas[group].copy_(alpha)


def loss_on(model: SuperNet, hyper: HyperNet, x: torch.Tensor, y: torch.Tensor,
            child: Mapping[str, CellChoice]) -> tuple[torch.Tensor, int]:
    logits = smash_forward(model, hyper, x, child)
    return F.cross_entropy(logits, y), int((logits.detach().argmax(1) == y).sum())
