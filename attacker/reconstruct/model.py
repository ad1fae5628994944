"""The attacker's copy of the supernet: the public spec, the weights its threat model allows, frozen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from attacker.reconstruct.fast.fastnet import FastSuperNet
from fednas.search_space import SupernetSpec
from fednas.state import THETA_PREFIX, import_state
from fednas.supernet import SuperNet


def uniform_weights_(model: SuperNet, low: float, high: float, generator: torch.Generator) -> None:
    """The paper's attacker weights θ_r ~ U(low, high) for every conv and linear parameter."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                for p in module.parameters():
                    p.copy_(torch.empty(p.shape).uniform_(low, high, generator=generator))


def attack_model(spec: SupernetSpec, mean: Sequence[float], std: Sequence[float],
                 theta: Mapping[str, torch.Tensor], device: torch.device | str = "cpu",
                 fast: bool = True) -> SuperNet | FastSuperNet:
    """A frozen supernet with the given θ (``theta:``-prefixed or bare state_dict names).

    ``fast`` selects :class:`attacker.reconstruct.fast.fastnet.FastSuperNet`: the same function, a cheaper
    double backward.
    """
    model = SuperNet(spec, mean, std)
    state = {k if k.startswith(THETA_PREFIX) else THETA_PREFIX + k: v for k, v in theta.items()}
    state.update({f"alpha:{g}": a.detach() for g, a in model.alphas.items()})
    import_state(model, state)
    model.train(spec.batchnorm)  # BN, when present, uses batch statistics as the client's α step does
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return FastSuperNet(model) if fast else model


class DenseDepthwise(nn.Conv2d):
    """A depthwise convolution evaluated as a dense one with a block-diagonal kernel ``weight * I``.

    Same parameter (name, shape), same function; its double backward is a few dense kernel calls, where
    PyTorch's grouped-convolution double backward loops over the channels (measured 1.6x faster for the
    θ-gradient double backward of the default supernet on one core).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.in_channels, dtype=x.dtype, device=x.device).view(self.in_channels, self.in_channels, 1, 1)
        return F.conv2d(x, self.weight * eye, self.bias, self.stride, self.padding, self.dilation, 1)


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def dense_depthwise(model: ModuleT) -> ModuleT:
    """Swap every depthwise convolution of ``model`` for :class:`DenseDepthwise`, in place."""
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.groups > 1
                and module.groups == module.in_channels == module.out_channels):
            module.__class__ = DenseDepthwise
    return model


def theta_model(spec: SupernetSpec, mean: Sequence[float], std: Sequence[float],
                device: torch.device | str = "cpu") -> SuperNet:
    """A frozen supernet for attacks that differentiate with respect to θ (θ is passed to
    ``torch.func.functional_call``; the module's own weights are never used)."""
    if spec.batchnorm:
        raise ValueError("θ-update attacks need a supernet without BatchNorm (batchnorm = false): batch "
                         "statistics cannot be replayed per capture")
    model = dense_depthwise(SuperNet(spec, mean, std)).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    return model
