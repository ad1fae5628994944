"""The client's whole local search replayed on dummy data, differentiably, for many captures at once.

A client runs first-order DARTS (:func:`fednas.search.local_search`): α steps on D^α batches and θ steps
on D^θ batches in the order of :func:`fednas.search.search_schedule`. θ steps use SGD with momentum,
weight decay and gradient-norm clipping; α steps use the α optimizer of :mod:`attacker.reconstruct.update`. Given
the broadcast (α_t, θ_t) and dummy batches, :func:`replay_local_search` returns the (Δα, Δθ) the client would have
sent, as a differentiable function of the dummy images and labels (Geiping et al.'s FedAvg attack:
the trajectory is simulated instead of assuming one gradient).

With the true batches it reproduces the client's update exactly (tested). Batching: every row (one
capture and restart) has its own α, θ and dummy data. Two evaluations of the same function:

* :func:`replay_rows` (the default, ``inversion-fast = true``): the edge-batched fast supernet with one weight set
  per row (:mod:`fednas.rows`): a θ tensor of shape ``[R, ...]``, every row's convolutions in one grouped call,
  and plain ``autograd.grad`` of the summed row losses as every row's own gradient, twice differentiable at the
  cost of a few grouped kernels per convolution;
* :func:`replay_local_search`: ``torch.func.vmap`` over the rows of ``torch.func.grad`` through the plain
  supernet, the first implementation, kept callable so that the ratio stays measurable.

What the attack does not know and approximates (see :func:`interpolated_alphas`): when it matches Δθ
alone, α between θ steps is interpolated between α_t and α_{t+1} in schedule order (exact when every α
step precedes the θ steps, e.g. one α step in the default interleaved order).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from attacker.reconstruct.threat import Schedule, ThetaRule
from attacker.reconstruct.update import UPDATE_STEPS, soft_cross_entropy

Tensors = dict[str, torch.Tensor]
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def _loss(model: nn.Module, theta: Tensors, alphas: Tensors, images: torch.Tensor,
          soft: torch.Tensor) -> torch.Tensor:
    logits = functional_call(model, theta, (images,), {"alphas": alphas})
    return soft_cross_entropy(logits, soft).mean()


def _theta_step(theta: Tensors, g: Tensors, buf: Tensors, rule: ThetaRule,
                rows: bool = False) -> tuple[Tensors, Tensors]:
    """torch's clip_grad_norm_ then SGD(momentum, weight_decay), as functions (``rows``: every tensor [R, ...],
    each row clipped by its own norm)."""
    if rule.clip > 0:
        first = 1 if rows else 0
        norm = torch.sqrt(functools.reduce(torch.add, [(v * v).sum(tuple(range(first, v.dim()))) for v in g.values()]))
        coef = torch.clamp(rule.clip / (norm + CLIP_EPS), max=1.0)
        g = {k: v * coef.view(-1, *([1] * (v.dim() - 1))) if rows else v * coef for k, v in g.items()}
    d = {k: g[k] + rule.weight_decay * theta[k] for k in theta}
    buf = d if not buf else {k: rule.momentum * buf[k] + d[k] for k in theta}
    step = buf if rule.momentum > 0 else d
    return {k: theta[k] - rule.lr * step[k] for k in theta}, buf


# (α or θ now, the other now, step index) -> the gradient of that step's batch loss
StepGrad = Callable[[Tensors, Tensors, int], Tensors]


def _walk(schedule: Schedule, theta: Tensors, alphas: Tensors, alpha_grad: StepGrad, theta_grad: StepGrad,
          known_alphas: Callable[[int], Tensors] | None, rows: bool) -> tuple[Tensors, Tensors]:
    """The client's local search in schedule order: α steps with the α optimizer, θ steps with clipped SGD and
    momentum; returns the final (θ, α). ``known_alphas(i)``: α at θ step i instead of the simulated α steps."""
    buf: Tensors = {}
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
        theta, buf = _theta_step(theta, theta_grad(theta, current, it), buf, schedule.theta, rows)
        it += 1
    return theta, alphas


def simulate_one(model: nn.Module, schedule: Schedule, theta0: Tensors, alpha0: Tensors,
                 alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                 theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """(Δα, Δθ) of one client; images are [steps * B, C, H, W] in step order for each kind.

    ``known_alphas`` ({group: [θ steps, edges, ops]}) gives α at every θ step instead of simulating the α
    steps (then ``alpha_images`` is unused and Δα is returned as zeros)."""
    b_a, b_t = schedule.alpha.batch_size, schedule.theta.batch_size

    def alpha_grad(alphas: Tensors, theta: Tensors, i: int) -> Tensors:
        sl = slice(i * b_a, (i + 1) * b_a)
        out: Tensors = grad(lambda a: _loss(model, theta, a, alpha_images[sl], alpha_soft[sl]))(alphas)
        return out

    def theta_grad(theta: Tensors, alphas: Tensors, i: int) -> Tensors:
        sl = slice(i * b_t, (i + 1) * b_t)
        out: Tensors = grad(lambda t: _loss(model, t, alphas, theta_images[sl], theta_soft[sl]))(theta)
        return out

    known = None if known_alphas is None else (lambda i: {k: v[i] for k, v in known_alphas.items()})
    theta, alphas = _walk(schedule, dict(theta0), dict(alpha0), alpha_grad, theta_grad, known, rows=False)
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


ROW_PREFIX = "model."   # FastSearchNet holds the supernet as ``model``


class FlatRows:
    """Every row's θ as one [R, P] tensor, handed to the network as per-parameter views: the SGD step is then a
    handful of operations instead of several per parameter tensor (the default supernet has 546)."""

    def __init__(self, theta0: Mapping[str, torch.Tensor]) -> None:
        self.names = list(theta0)
        self.shapes = [theta0[k].shape for k in self.names]
        self.sizes = [theta0[k].numel() for k in self.names]

    def flatten(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([theta[k].detach().flatten() for k in self.names])

    def views(self, flat: torch.Tensor) -> Tensors:
        """{name: [R, *shape]} views of ``flat`` ([R, P]) in one split."""
        parts = flat.split(self.sizes, dim=1)
        return {k: v.view(flat.shape[0], *shape) for k, v, shape in zip(self.names, parts, self.shapes, strict=True)}


def _rows_loss(net: nn.Module, theta: Tensors, alphas: Tensors, images: torch.Tensor,
               soft: torch.Tensor) -> torch.Tensor:
    """Σ over rows of each row's mean batch loss: θ [R, ...], α [R, edges, ops], images [R, n, C, H, W]."""
    rows, n = images.shape[:2]
    per_sample = {g: a.repeat_interleave(n, 0) for g, a in alphas.items()}
    logits = functional_call(net, {ROW_PREFIX + k: v for k, v in theta.items()}, (images.flatten(0, 1),),
                             {"alphas": per_sample})
    return soft_cross_entropy(logits, soft.flatten(0, 1)).view(rows, n).mean(1).sum()


def _alpha_loss(net: nn.Module, theta: Tensors, batch: tuple[torch.Tensor, torch.Tensor]
                ) -> Callable[[Tensors], torch.Tensor]:
    return lambda alphas: _rows_loss(net, theta, alphas, *batch)


def _theta_loss(net: nn.Module, layout: FlatRows, alphas: Tensors, batch: tuple[torch.Tensor, torch.Tensor]
                ) -> Callable[[Tensors], torch.Tensor]:
    return lambda flat: _rows_loss(net, layout.views(flat["flat"]), alphas, *batch)


def _partial(loss_of: Callable[[Tensors], torch.Tensor], wrt: Tensors, create_graph: bool) -> Tensors:
    """Every row's own partial gradient of ``loss_of(wrt)`` (rows do not interact: the gradient of the sum is the
    per-row gradient). The client differentiates at fixed values of the other variables, although here α depends
    on earlier θ steps and θ on earlier α steps: the gradient is taken with respect to a fresh alias of ``wrt``, so
    only the paths through this use count (as ``torch.func.grad`` of an argument would)."""
    alias = {k: v.view_as(v) for k, v in wrt.items()}
    grads = torch.autograd.grad(loss_of(alias), list(alias.values()), create_graph=create_graph)
    return dict(zip(wrt, grads, strict=True))


def replay_rows(net: nn.Module, schedule: Schedule, theta0: Mapping[str, torch.Tensor], alpha0: Tensors,
                alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """:func:`replay_local_search` (same arguments, same result) through row weights instead of ``vmap``, ``net`` a
    :class:`fednas.fastnet.FastSearchNet`; under
    ``no_grad`` too (the update is a gradient: it is computed with grad mode on, without a graph of its own)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        return _replay_rows(net, schedule, FlatRows(theta0), theta0, alpha0, (alpha_images, alpha_soft),
                            (theta_images, theta_soft), known_alphas, create_graph)


def _replay_rows(net: nn.Module, schedule: Schedule, layout: FlatRows, theta0: Mapping[str, torch.Tensor],
                 alpha0: Tensors, alpha_data: tuple[torch.Tensor, torch.Tensor],
                 theta_data: tuple[torch.Tensor, torch.Tensor], known_alphas: Tensors | None,
                 create_graph: bool) -> tuple[Tensors, Tensors]:
    rows = theta_data[0].shape[0]
    start = layout.flatten(theta0).unsqueeze(0).expand(rows, -1)
    b_a, b_t = schedule.alpha.batch_size, schedule.theta.batch_size

    def alpha_grad(alphas: Tensors, theta: Tensors, i: int) -> Tensors:
        batch = (alpha_data[0][:, i * b_a:(i + 1) * b_a], alpha_data[1][:, i * b_a:(i + 1) * b_a])
        return _partial(_alpha_loss(net, layout.views(theta["flat"]), batch), alphas, create_graph)

    def theta_grad(theta: Tensors, alphas: Tensors, i: int) -> Tensors:
        batch = (theta_data[0][:, i * b_t:(i + 1) * b_t], theta_data[1][:, i * b_t:(i + 1) * b_t])
        return _partial(_theta_loss(net, layout, alphas, batch), theta, create_graph)

    alphas0 = {k: a if a.requires_grad else a.detach().clone().requires_grad_() for k, a in alpha0.items()}
    known = None if known_alphas is None else (lambda i: {k: v[:, i] for k, v in known_alphas.items()})
    theta, alphas = _walk(schedule, {"flat": start.clone().requires_grad_()}, alphas0, alpha_grad, theta_grad,
                          known, rows=True)
    return {k: alphas[k] - alpha0[k] for k in alphas}, layout.views(theta["flat"] - start)
