"""The client's local search replayed for R rows at once through row weights (``inversion-fast = true``).

The same function as :func:`attacker.reconstruct.trajectory.replay_local_search` (tested to 1e-9 in float64, and
exact against the client's own update), evaluated through the edge-batched fast supernet with one weight set per
row (:mod:`fednas.rows`): every row's convolutions in one grouped call, and plain ``autograd.grad`` of the summed
row losses as every row's own gradient, twice differentiable at the cost of a few grouped kernels per convolution.

θ is held flat: the shared broadcast θ_t ([P]) and every row's displacement from it ([R, P]), so that

* before the first θ step every row's weights are θ_t expanded, not copied;
* a θ step is three passes over [R, P] (the gradient's norm, ``addcmul`` for clip + weight decay, the step) where
  the per-tensor form took eight (the default supernet has 546 tensors and about 209,000 weights per row);
* Δθ is the accumulated displacement itself, already flat, which is what the objective compares; no final
  subtraction ``θ − θ_t`` and no concatenation of 546 views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property

import torch
from torch import nn
from torch.func import functional_call

from attacker.reconstruct.threat import Schedule, ThetaRule
from attacker.reconstruct.trajectory import CLIP_EPS, Tensors, walk_schedule
from attacker.reconstruct.update import soft_cross_entropy

ROW_PREFIX = "model."   # FastSearchNet holds the supernet as ``model``


class FlatRows:
    """The layout of one flat θ: parameter names in order, their shapes and sizes."""

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


class RowTheta:
    """Every row's θ as the shared start ([P]) plus the row's displacement ([R, P]; None before the first θ step),
    and the SGD momentum buffer ([R, P])."""

    def __init__(self, start: torch.Tensor, rows: int, delta: torch.Tensor | None = None,
                 buf: torch.Tensor | None = None) -> None:
        self.start, self.rows, self.delta, self.buf = start, rows, delta, buf

    @cached_property
    def weights(self) -> torch.Tensor:
        """[R, P]: θ_t expanded (no copy) before the first step."""
        shared = self.start.expand(self.rows, -1)
        return shared if self.delta is None else shared + self.delta

    def displacement(self) -> torch.Tensor:
        return self.delta if self.delta is not None else torch.zeros(self.rows, self.start.numel(),
                                                                     dtype=self.start.dtype)


def row_theta_step(state: RowTheta, g: torch.Tensor, rule: ThetaRule) -> RowTheta:
    """torch's clip_grad_norm_ (each row by its own norm) then SGD(momentum, weight_decay), on the displacement."""
    decay = rule.weight_decay * (state.start if state.delta is None else state.weights)
    if rule.clip > 0:
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        d = torch.addcmul(decay, g, torch.clamp(rule.clip / (norm + CLIP_EPS), max=1.0))
    else:
        d = g + decay
    buf = d if state.buf is None else torch.add(d, state.buf, alpha=rule.momentum)
    step = buf if rule.momentum > 0 else d
    delta = step * -rule.lr if state.delta is None else torch.add(state.delta, step, alpha=-rule.lr)
    return RowTheta(state.start, state.rows, delta, buf)


def _rows_loss(net: nn.Module, theta: Tensors, alphas: Tensors, images: torch.Tensor,
               soft: torch.Tensor) -> torch.Tensor:
    """Σ over rows of each row's mean batch loss: θ [R, ...], α [R, edges, ops], images [R, n, C, H, W]."""
    rows, n = images.shape[:2]
    per_sample = {g: a.repeat_interleave(n, 0) for g, a in alphas.items()}
    logits = functional_call(net, {ROW_PREFIX + k: v for k, v in theta.items()}, (images.flatten(0, 1),),
                             {"alphas": per_sample})
    return soft_cross_entropy(logits, soft.flatten(0, 1)).view(rows, n).mean(1).sum()


def _partial(loss_of: Callable[[Tensors], torch.Tensor], wrt: Tensors, create_graph: bool) -> Tensors:
    """Every row's own partial gradient of ``loss_of(wrt)`` (rows do not interact: the gradient of the sum is the
    per-row gradient). The client differentiates at fixed values of the other variables, although here α depends
    on earlier θ steps and θ on earlier α steps: the gradient is taken with respect to a fresh alias of ``wrt``, so
    only the paths through this use count (as ``torch.func.grad`` of an argument would)."""
    alias = {k: v.view_as(v) for k, v in wrt.items()}
    grads = torch.autograd.grad(loss_of(alias), list(alias.values()), create_graph=create_graph)
    return dict(zip(wrt, grads, strict=True))


def replay_rows_flat(net: nn.Module, schedule: Schedule, theta0: Mapping[str, torch.Tensor], alpha0: Tensors,
                     alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                     theta_soft: torch.Tensor, known_alphas: Tensors | None = None
                     ) -> tuple[Tensors, torch.Tensor]:
    """:func:`attacker.reconstruct.trajectory.replay_local_search_flat` (same arguments, same result: Δθ as
    [R, P] in the order of ``theta0``), ``net`` a :class:`fednas.fastnet.FastSearchNet`; under ``no_grad`` too (the
    update is a gradient: it is computed with grad mode on, without a graph of its own)."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        return _replay(net, schedule, FlatRows(theta0), theta0, alpha0, (alpha_images, alpha_soft),
                       (theta_images, theta_soft), known_alphas, create_graph)


def replay_rows(net: nn.Module, schedule: Schedule, theta0: Mapping[str, torch.Tensor], alpha0: Tensors,
                alpha_images: torch.Tensor, alpha_soft: torch.Tensor, theta_images: torch.Tensor,
                theta_soft: torch.Tensor, known_alphas: Tensors | None = None) -> tuple[Tensors, Tensors]:
    """:func:`replay_rows_flat` with Δθ as {name: [R, ...]}, as :func:`replay_local_search` returns it."""
    d_alpha, flat = replay_rows_flat(net, schedule, theta0, alpha0, alpha_images, alpha_soft, theta_images,
                                     theta_soft, known_alphas)
    return d_alpha, FlatRows(theta0).views(flat)


def _replay(net: nn.Module, schedule: Schedule, layout: FlatRows, theta0: Mapping[str, torch.Tensor],
            alpha0: Tensors, alpha_data: tuple[torch.Tensor, torch.Tensor],
            theta_data: tuple[torch.Tensor, torch.Tensor], known_alphas: Tensors | None,
            create_graph: bool) -> tuple[Tensors, torch.Tensor]:
    b_a, b_t = schedule.alpha.batch_size, schedule.theta.batch_size

    def alpha_grad(alphas: Tensors, theta: RowTheta, i: int) -> Tensors:
        images, soft = alpha_data[0][:, i * b_a:(i + 1) * b_a], alpha_data[1][:, i * b_a:(i + 1) * b_a]
        weights = layout.views(theta.weights)
        return _partial(lambda a: _rows_loss(net, weights, a, images, soft), alphas, create_graph)

    def theta_grad(theta: RowTheta, alphas: Tensors, i: int) -> torch.Tensor:
        images, soft = theta_data[0][:, i * b_t:(i + 1) * b_t], theta_data[1][:, i * b_t:(i + 1) * b_t]
        return _partial(lambda w: _rows_loss(net, layout.views(w["flat"]), alphas, images, soft),
                        {"flat": theta.weights}, create_graph)["flat"]

    def theta_step(theta: RowTheta, g: torch.Tensor) -> RowTheta:
        return row_theta_step(theta, g, schedule.theta)

    alphas0 = {k: a if a.requires_grad else a.detach().clone().requires_grad_() for k, a in alpha0.items()}
    known = None if known_alphas is None else (lambda i: {k: v[:, i] for k, v in known_alphas.items()})
    start = RowTheta(layout.flatten(theta0).requires_grad_(), theta_data[0].shape[0])
    theta, alphas = walk_schedule(schedule, start, alphas0, alpha_grad, theta_grad, theta_step, known)
    return {k: alphas[k] - alpha0[k] for k in alphas}, theta.displacement()
