"""The attacker's copy of the supernet: the public spec, the weights its threat model allows, frozen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from attacker.fastnet import FastSuperNet
from fednas.search_space import SupernetSpec
from fednas.state import THETA_PREFIX, import_state
from fednas.supernet import SuperNet


def uniform_weights(model: SuperNet, low: float, high: float, generator: torch.Generator) -> None:
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

    ``fast`` selects :class:`attacker.fastnet.FastSuperNet`: the same function, cheaper double backward.
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
