"""The client's whole local search replayed on dummy data, differentiably, for many captures at once.

A client runs first-order DARTS (:func:`fednas.search.local_search`): α steps on D^α batches and θ steps
on D^θ batches in the order of :func:`fednas.search.search_schedule`. θ steps use SGD with momentum,
weight decay and gradient-norm clipping; α steps use the α optimizer of :mod:`attacker.reconstruct.update`. Given
the broadcast (α_t, θ_t) and dummy batches, :func:`replay_local_search` returns the (Δα, Δθ) the client would have
sent, as a differentiable function of the dummy images and labels (Geiping et al.'s FedAvg attack:
the trajectory is simulated instead of assuming one gradient).

With the true batches it reproduces the client's update exactly (tested). Batching: every row (one
capture and restart) has its own α, θ and dummy data. :func:`replay_local_search` evaluates it with
``torch.func.vmap`` over the rows of ``torch.func.grad`` through the plain supernet (``inversion-fast = false``,
the first implementation, kept callable so that the ratio stays measurable);
:func:`attacker.reconstruct.row_replay.replay_rows_flat` evaluates the same function through row weights (the
default). Both walk the schedule with :func:`walk_schedule`.

What the attack does not know and approximates (see :func:`interpolated_alphas`): when it matches Δθ
alone, α between θ steps is interpolated between α_t and α_{t+1} in schedule order (exact when every α
step precedes the θ steps, e.g. one α step in the default interleaved order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from attacker.reconstruct.threat import Schedule, ThetaRule
from attacker.reconstruct.update import UPDATE_STEPS, soft_cross_entropy

Tensors = dict[str, torch.Tensor]
S = TypeVar("S")
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def _loss(model: nn.Module, theta: Tensors, alphas: Tensors, images: torch.Tensor,
          soft: torch.Tensor) -> torch.Tensor:
    logits = functional_call(model, theta, (images,), {"alphas": alphas})
    return soft_cross_entropy(logits, soft).mean()


def _theta_step(state: tuple[Tensors, Tensors], g: Tensors, rule: ThetaRule) -> tuple[Tensors, Tensors]:
    """torch's clip_grad_norm_ then SGD(momentum, weight_decay), as functions of (θ, momentum buffer)."""
    theta, buf = state
    if rule.clip > 0:
        norm = torch.sqrt(functools.reduce(torch.add, [(v * v).sum() for v in g.values()]))
        coef = torch.clamp(rule.clip / (norm + CLIP_EPS), max=1.0)
        g = {k: v * coef for k, v in g.items()}
    d = {k: g[k] + rule.weight_decay * theta[k] for k in theta}
    buf = d if not buf else {k: rule.momentum * buf[k] + d[k] for k in theta}
    step = buf if rule.momentum > 0 else d
    return {k: theta[k] - rule.lr * step[k] for k in theta}, buf


# (α now, the θ state now, step index) -> the gradient of that α step's batch loss, and
# (the θ state now, α now, step index) -> the gradient of that θ step's batch loss
AlphaGrad = Callable[[Tensors, Any, int], Tensors]
ThetaGrad = Callable[[Any, Tensors, int], Any]


def walk_schedule(schedule: Schedule, theta: S, alphas: Tensors, alpha_grad: AlphaGrad, theta_grad: ThetaGrad,
                  theta_step: Callable[[S, Any], S], known_alphas: Callable[[int], Tensors] | None
                  ) -> tuple[S, Tensors]:
    """The client's local search in schedule order: α steps with the α optimizer, θ steps by ``theta_step`` (the θ
    state is the caller's: clipped SGD with momentum); returns the final (θ state, α). ``known_alphas(i)``: α at θ
    step i instead of the simulated α steps."""
    states: dict[str, dict[str, torch.Tensor]] = {g: {} for g in alphas}
    step_fn = UPDATE_STEPS.get(schedule.alpha.optimizer)
    a_rule = schedule.alpha
    ia = it = 0
    for kind in schedule.kinds():
        if kind == "alpha":
            if known_alphas is None:
                ga = alpha_grad(alphas, theta, ia)
                alphas = {k: step_fn(a, ga[k] + a_rule.weight_decay * a, states[k], ia + 1, a_rule)
                          for k, a in alphas.items()}
            ia += 1
            continue
        current = alphas if known_alphas is None else known_alphas(it)
        theta = theta_step(theta, theta_grad(theta, current, it))
        it += 1
    return theta, alphas


def simulate_one(model: nn.Module, schedule: Schedule, theta0: Tensors, alpha0: Tensors,
                 alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                 theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """(Δα, Δθ) of one client; images are [steps * B, C, H, W] in step order for each kind.

    ``known_alphas`` ({group: [θ steps, edges, ops]}) gives α at every θ step instead of simulating the α
    steps (then ``alpha_images`` is unused and Δα is returned as zeros)."""
    b_a, b_t = schedule.alpha.batch_size, schedule.theta.batch_size

    def alpha_grad(alphas: Tensors, state: tuple[Tensors, Tensors], i: int) -> Tensors:
        sl = slice(i * b_a, (i + 1) * b_a)
        out: Tensors = grad(lambda a: _loss(model, state[0], a, alpha_images[sl], alpha_soft[sl]))(alphas)
        return out

    def theta_grad(state: tuple[Tensors, Tensors], alphas: Tensors, i: int) -> Tensors:
        sl = slice(i * b_t, (i + 1) * b_t)
        out: Tensors = grad(lambda t: _loss(model, t, alphas, theta_images[sl], theta_soft[sl]))(state[0])
        return out

    known = None if known_alphas is None else (lambda i: {k: v[i] for k, v in known_alphas.items()})
    step = functools.partial(_theta_step, rule=schedule.theta)
    empty: Tensors = {}
    (theta, _), alphas = walk_schedule(schedule, (dict(theta0), empty), dict(alpha0), alpha_grad, theta_grad, step,
                                       known)
    return {k: alphas[k] - alpha0[k] for k in alphas}, {k: theta[k] - theta0[k] for k in theta}


def interpolated_alphas(schedule: Schedule, alpha0: Tensors, alpha1: Tensors) -> Tensors:
    """α at every θ step when only α_t and α_{t+1} are known: the share of α steps taken so far, linearly
    ({group: [rows, θ steps, edges, ops]} from [rows, edges, ops]); exact when the α steps come first."""
    kinds, done, weights = schedule.kinds(), 0, []
    for kind in kinds:
        if kind == "alpha":
            done += 1
        else:
            weights.append(done / max(schedule.alpha.steps, 1))
    w = torch.tensor(weights, dtype=next(iter(alpha0.values())).dtype).view(1, -1, 1, 1)
    return {k: alpha0[k].unsqueeze(1) + w * (alpha1[k] - alpha0[k]).unsqueeze(1) for k in alpha0}


def replay_local_search(model: nn.Module, schedule: Schedule, theta0: Mapping[str, torch.Tensor], alpha0: Tensors,
             alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
             theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """:func:`simulate_one` for R rows at once: θ0 is shared; α0 [R, edges, ops]; images [R, n, C, H, W];
    soft labels [R, n, classes]; ``known_alphas`` [R, θ steps, edges, ops]. Returns [R, ...] updates."""
    def one(a0: Tensors, ai: torch.Tensor, asoft: torch.Tensor, ti: torch.Tensor, tsoft: torch.Tensor,
            known: Tensors | None) -> tuple[Tensors, Tensors]:
        return simulate_one(model, schedule, dict(theta0), a0, ai, asoft, ti, tsoft, known)

    dims = (0, 0, 0, 0, 0, None if known_alphas is None else 0)
    return vmap(one, in_dims=dims)(alpha0, alpha_images, alpha_soft, theta_images, theta_soft, known_alphas)


def flat_delta(d_theta: Tensors, names: list[str]) -> torch.Tensor:
    """Δθ of R rows ({name: [R, ...]}) as one [R, P] tensor, parameters in the order of ``names``."""
    return torch.cat([d_theta[k].flatten(1) for k in names], 1)


def replay_local_search_flat(model: nn.Module, schedule: Schedule, theta0: Mapping[str, torch.Tensor],
                             alpha0: Tensors, alpha_images: torch.Tensor, alpha_soft: torch.Tensor,
                             theta_images: torch.Tensor, theta_soft: torch.Tensor,
                             known_alphas: Tensors | None = None) -> tuple[Tensors, torch.Tensor]:
    """:func:`replay_local_search` with Δθ as one [R, P] tensor in the order of ``theta0``."""
    d_alpha, d_theta = replay_local_search(model, schedule, theta0, alpha0, alpha_images, alpha_soft, theta_images,
                                           theta_soft, known_alphas)
    return d_alpha, flat_delta(d_theta, list(theta0))
