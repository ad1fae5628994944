"""The client's whole local search replayed on dummy data, differentiably, for many captures at once.

A client runs first-order DARTS (:func:`fednas.search.local_search`): α steps on D^α batches and θ steps
on D^θ batches in the order of :func:`fednas.search.search_schedule`. θ steps use SGD with momentum,
weight decay and gradient-norm clipping; α steps use the α optimizer of :mod:`attacker.reconstruct.update`. Given
the broadcast (α_t, θ_t) and dummy batches, :func:`replay_local_search` returns the (Δα, Δθ) the client would have
sent, as a differentiable function of the dummy images and labels (Geiping et al.'s FedAvg attack:
the trajectory is simulated instead of assuming one gradient).

With the true batches it reproduces the client's update exactly (tested). Batching: every row (one
capture and restart) has its own α, θ and dummy data; ``torch.func.vmap`` evaluates all rows in one
pass of each operation, and ``torch.func.grad`` gives the inner gradients, which stay differentiable.

What the attack does not know and approximates (see :func:`interpolated_alphas`): when it matches Δθ
alone, α between θ steps is interpolated between α_t and α_{t+1} in schedule order (exact when every α
step precedes the θ steps, e.g. one α step in the default interleaved order).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from torch.func import functional_call, grad, vmap

from attacker.reconstruct.threat import Schedule, ThetaRule
from attacker.reconstruct.update import UPDATE_STEPS, soft_cross_entropy
from fednas.supernet import SuperNet

Tensors = dict[str, torch.Tensor]
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def _loss(model: SuperNet, theta: Tensors, alphas: Tensors, images: torch.Tensor,
          soft: torch.Tensor) -> torch.Tensor:
    logits = functional_call(model, theta, (images,), {"alphas": alphas})
    return soft_cross_entropy(logits, soft).mean()


def _theta_step(theta: Tensors, g: Tensors, buf: Tensors, rule: ThetaRule) -> tuple[Tensors, Tensors]:
    """torch's clip_grad_norm_ then SGD(momentum, weight_decay), as functions."""
    if rule.clip > 0:
        norm = torch.sqrt(functools.reduce(torch.add, [(v * v).sum() for v in g.values()]))
        coef = torch.clamp(rule.clip / (norm + CLIP_EPS), max=1.0)
        g = {k: v * coef for k, v in g.items()}
    d = {k: g[k] + rule.weight_decay * theta[k] for k in theta}
    buf = d if not buf else {k: rule.momentum * buf[k] + d[k] for k in theta}
    step = buf if rule.momentum > 0 else d
    return {k: theta[k] - rule.lr * step[k] for k in theta}, buf


def simulate_one(model: SuperNet, schedule: Schedule, theta0: Tensors, alpha0: Tensors,
                 alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                 theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """(Δα, Δθ) of one client; images are [steps * B, C, H, W] in step order for each kind.

    ``known_alphas`` ({group: [θ steps, edges, ops]}) gives α at every θ step instead of simulating the α
    steps (then ``alpha_images`` is unused and Δα is returned as zeros)."""
    theta, alphas = dict(theta0), dict(alpha0)
    buf: Tensors = {}
    states: dict[str, dict[str, torch.Tensor]] = {g: {} for g in alphas}
    step_fn = UPDATE_STEPS.get(schedule.alpha.optimizer)
    a_rule, t_rule = schedule.alpha, schedule.theta
    ia = it = 0
    for kind in schedule.kinds():
        if kind == "alpha":
            if known_alphas is None:
                sl = slice(ia * a_rule.batch_size, (ia + 1) * a_rule.batch_size)
                ga = grad(lambda a, sl=sl, th=theta: _loss(model, th, a, alpha_images[sl], alpha_soft[sl]))(alphas)
                alphas = {k: step_fn(a, ga[k] + a_rule.weight_decay * a, states[k], ia + 1, a_rule)
                          for k, a in alphas.items()}
            ia += 1
            continue
        current = alphas if known_alphas is None else {k: v[it] for k, v in known_alphas.items()}
        sl = slice(it * t_rule.batch_size, (it + 1) * t_rule.batch_size)
        gt = grad(lambda t, sl=sl, cur=current: _loss(model, t, cur, theta_images[sl], theta_soft[sl]))(theta)
        theta, buf = _theta_step(theta, gt, buf, t_rule)
        it += 1
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


def replay_local_search(model: SuperNet, schedule: Schedule, theta0: Mapping[str, torch.Tensor], alpha0: Tensors,
             alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
             theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """:func:`simulate_one` for R rows at once: θ0 is shared; α0 [R, edges, ops]; images [R, n, C, H, W];
    soft labels [R, n, classes]; ``known_alphas`` [R, θ steps, edges, ops]. Returns [R, ...] updates."""
    def one(a0: Tensors, ai: torch.Tensor, asoft: torch.Tensor, ti: torch.Tensor, tsoft: torch.Tensor,
            known: Tensors | None) -> tuple[Tensors, Tensors]:
        return simulate_one(model, schedule, dict(theta0), a0, ai, asoft, ti, tsoft, known)

    dims = (0, 0, 0, 0, 0, None if known_alphas is None else 0)
    return vmap(one, in_dims=dims)(alpha0, alpha_images, alpha_soft, theta_images, theta_soft, known_alphas)
