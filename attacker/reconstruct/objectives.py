"""Gradient-matching objectives and image regularisers: pure functions, registered by name.

Objectives compare the update predicted for the dummy data with the observed one, per capture: both are
[C, P] (C captures, P α entries). They return [C] losses. ``scale`` ([C, P] or [P]) is used by the
whitened objective only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fednas.registry import Registry

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
OBJECTIVES: Registry[Objective] = Registry("objective")
EPS = 1e-12


@OBJECTIVES.register("l2")
def l2(pred: torch.Tensor, obs: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's Eq. 5, ‖Δα' − Δα‖², divided by ‖Δα‖² so that losses are comparable across captures."""
    return ((pred - obs) ** 2).sum(-1) / ((obs ** 2).sum(-1) + EPS)


@OBJECTIVES.register("cosine")
def cosine(pred: torch.Tensor, obs: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """1 − cos(Δα', Δα): insensitive to the update's scale (learning rate, batch averaging)."""
    dot = (pred * obs).sum(-1)
    loss: torch.Tensor = 1.0 - dot / (pred.norm(dim=-1) * obs.norm(dim=-1) + EPS)
    return loss


@OBJECTIVES.register("whitened-l2")
def whitened_l2(pred: torch.Tensor, obs: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ((Δα' − Δα) / s)² with s the per-entry spread of Δα over public images."""
    if scale is None:
        raise ValueError("whitened-l2 needs per-entry scales from public images")
    return (((pred - obs) / (scale + EPS)) ** 2).mean(-1)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV per image ([N, C, H, W] -> [N]), mean absolute neighbour difference."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean((-3, -2, -1))
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean((-3, -2, -1))
    return dx + dy
