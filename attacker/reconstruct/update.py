"""Simulating the client's α update on dummy data, differentiably, for many captures at once.

Every sample carries the index of the capture it belongs to (``owner``) and of the local step it is
used in (``step``). Giving each sample its capture's α (per-sample α in the supernet) turns one
backward pass into per-capture α gradients. With ``create_graph`` the result can be differentiated
again with respect to the dummy images and labels.

What is exact and what is approximated:

* one SGD step: Δα = −lr·(∇α + wd·α) exactly as the client computed it;
* several α steps: the client's trajectory is unrolled step by step on distinct dummy batches. θ is
  held at the weights the attacker uses, although a client that interleaves θ steps changes θ between
  α steps (exact for ``alpha-first`` order or when θ steps come last);
* Adam: the client's Adam recursion (moments from zero, bias correction) is unrolled as well. After one
  step it reduces to lr·g/(|g| + eps), nearly a sign: almost no magnitude information survives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
import torch.nn.functional as F

from attacker.reconstruct.threat import UpdateRule
from fednas.registry import Registry

ADAM_BETAS = (0.5, 0.999)
ADAM_EPS = 1e-8

# (α, gradient incl. weight decay, optimizer state, step number from 1, rule) -> new α
StepFn = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int, UpdateRule], torch.Tensor]
UPDATE_STEPS: Registry[StepFn] = Registry("α optimizer")


class AlphaModel(Protocol):
    """A supernet that takes per-sample α: ``model(images, alphas) -> logits`` (the plain SuperNet, or the
    attack's FastSuperNet: the same function)."""

    def __call__(self, x: torch.Tensor, alphas: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor: ...


@UPDATE_STEPS.register("sgd")
def sgd_step(alpha: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], t: int,
             rule: UpdateRule) -> torch.Tensor:
    return alpha - rule.lr * grad


@UPDATE_STEPS.register("adam")
def adam_step(alpha: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], t: int,
              rule: UpdateRule) -> torch.Tensor:
    b1, b2 = ADAM_BETAS
    state["m"] = b1 * state.get("m", torch.zeros_like(grad)) + (1 - b1) * grad
    state["v"] = b2 * state.get("v", torch.zeros_like(grad)) + (1 - b2) * grad * grad
    m_hat, v_hat = state["m"] / (1 - b1 ** t), state["v"] / (1 - b2 ** t)
    return alpha - rule.lr * m_hat / (torch.sqrt(v_hat + 1e-30) + ADAM_EPS)


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy against (possibly soft) label distributions."""
    return -(soft_labels * F.log_softmax(logits, dim=-1)).sum(-1)


def alpha_gradients(model: AlphaModel, alphas: Mapping[str, torch.Tensor], images: torch.Tensor,
                    soft_labels: torch.Tensor, owner: torch.Tensor, batch_size: int,
                    create_graph: bool = True) -> dict[str, torch.Tensor]:
    """Per-capture ∇α of the mean batch loss; ``alphas`` are [C, edges, ops] per group."""
    per_sample = {g: a[owner] for g, a in alphas.items()}
    loss = soft_cross_entropy(model(images, per_sample), soft_labels).sum() / batch_size
    grads = torch.autograd.grad(loss, list(alphas.values()), create_graph=create_graph)
    return dict(zip(alphas, grads, strict=True))


def predicted_update(model: AlphaModel, alpha_before: Mapping[str, torch.Tensor], images: torch.Tensor,
                     soft_labels: torch.Tensor, owner: torch.Tensor, step: torch.Tensor,
                     rule: UpdateRule, create_graph: bool = True) -> dict[str, torch.Tensor]:
    """Δα the client would have sent had it trained on ``images`` (see the module docstring)."""
    step_fn = UPDATE_STEPS.get(rule.optimizer)
    alphas = {g: a if a.requires_grad else a.detach().clone().requires_grad_() for g, a in alpha_before.items()}
    start = dict(alphas)
    states: dict[str, dict[str, torch.Tensor]] = {g: {} for g in alphas}
    for j in range(rule.steps):
        sel = (step == j).nonzero().squeeze(1)
        grads = alpha_gradients(model, alphas, images[sel], soft_labels[sel], owner[sel], rule.batch_size,
                                create_graph)
        alphas = {g: step_fn(a, grads[g] + rule.weight_decay * a, states[g], j + 1, rule)
                  for g, a in alphas.items()}
    return {g: alphas[g] - start[g] for g in alphas}


def flatten(groups: Mapping[str, torch.Tensor], order: list[str]) -> torch.Tensor:
    """[C, P] from per-group [C, edges, ops] in a fixed group order."""
    return torch.cat([groups[g].flatten(1) for g in order], dim=1)
