"""ADRA: reconstruct a client's α-batch from its architecture update, many captures in one optimisation.

The objective is assembled from pure pieces (:mod:`attacker.objectives`, :mod:`attacker.update`); this
module only runs the loop. Captures that share weights (all of them under ``architecture-only``, one
round's under ``wire``) are optimised together, restarts included, as one batch; callbacks see every
iteration. Inputs are threat-model targets and public knowledge only: no ground truth.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from attacker.config import AttackSettings
from attacker.labels import class_templates, match_labels
from attacker.model import attack_model
from attacker.objectives import OBJECTIVES, total_variation
from attacker.prior import ImageVAE
from attacker.threat import AttackTarget, PublicKnowledge
from attacker.update import flatten, predicted_update


@dataclass
class Reconstruction:
    """One capture's recovered α-batch (``steps * B`` images, in the client's step order)."""

    capture_id: str
    images: torch.Tensor
    labels: torch.Tensor
    match_loss: float
    seconds: float


@dataclass(frozen=True)
class Progress:
    """What an iteration callback receives."""

    iteration: int
    iterations: int
    captures: int
    loss: float


ProgressCallback = Callable[[Progress], None]


class ImageParams:
    """Dummy images as optimisable parameters: boxed pixels, or the latent code of a learned prior."""

    def __init__(self, start: torch.Tensor, prior: ImageVAE | None) -> None:
        self.prior = prior
        if prior is None:
            self.param = torch.logit(start.clamp(0.02, 0.98)).detach().requires_grad_()
        else:
            mu, _ = prior.encode(start)
            self.param = mu.detach().requires_grad_()

    def images(self) -> torch.Tensor:
        return torch.sigmoid(self.param) if self.prior is None else self.prior.decode(self.param)


def initial_images(kind: str, labels: torch.Tensor, public: PublicKnowledge, shape: tuple[int, ...],
                    generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(shape, generator=generator)
    if kind == "noise":
        return noise
    if kind == "constant":
        return torch.full(shape, 0.5) + 0.01 * (noise - 0.5)
    return (public.class_means()[labels.cpu()] + 0.05 * (noise - 0.5)).clamp(0, 1)


def _whitening(model: torch.nn.Module, target: AttackTarget, public: PublicKnowledge, groups: list[str],
               count: int = 32) -> torch.Tensor:
    """Per-entry spread of single-image updates over public images (for ``whitened-l2``)."""
    images, labels = public.aux_images[:count], public.aux_labels[:count]
    alphas = {g: target.alpha_before[g].unsqueeze(0).repeat(count, 1, 1) for g in groups}
    owner = torch.arange(count)
    rule = replace(target.rule, steps=1, batch_size=1)
    upd = predicted_update(model, alphas, images, F.one_hot(labels, public.spec.num_classes).float(), owner,
                           torch.zeros_like(owner), rule, create_graph=False)
    return flatten({g: u.detach() for g, u in upd.items()}, groups).std(0)


def reconstruct_batch(targets: Sequence[AttackTarget], public: PublicKnowledge, settings: AttackSettings,
                      prior: ImageVAE | None, generator: torch.Generator,
                      callbacks: Sequence[ProgressCallback] = ()) -> list[Reconstruction]:
    """Jointly reconstruct captures that share θ (one model, one batched optimisation)."""
    start_time = time.perf_counter()
    first = targets[0]
    if any(t.theta_key != first.theta_key or t.rule != first.rule for t in targets):
        raise ValueError("reconstruct_batch needs captures that share weights and update rule")
    model = attack_model(public.spec, public.mean, public.std, first.theta, fast=settings.attack_fast)
    groups = list(public.spec.alpha_groups())
    rule, restarts, n_cap = first.rule, settings.attack_restarts, len(targets)
    per_capture = rule.steps * rule.batch_size
    alpha0 = {g: torch.stack([t.alpha_before[g] for t in targets]) for g in groups}
    observed = flatten({g: torch.stack([t.alpha_delta[g] for t in targets]) for g in groups}, groups)
    labels = match_labels(class_templates(model, alpha0, public, rule), observed, per_capture)  # [C, S*B]

    # restarts are extra batch entries: capture c, restart r -> row r * C + c
    rows = n_cap * restarts
    alpha_rows = {g: a.repeat(restarts, 1, 1) for g, a in alpha0.items()}
    obs_rows = observed.repeat(restarts, 1)
    owner = torch.arange(rows).repeat_interleave(per_capture)
    step = torch.arange(rule.steps).repeat_interleave(rule.batch_size).repeat(rows)
    flat_labels = labels.repeat(restarts, 1).flatten()
    shape = (rows * per_capture, public.spec.in_channels, public.spec.image_size, public.spec.image_size)
    params = ImageParams(initial_images(settings.attack_init, flat_labels, public, shape, generator),
                         prior if settings.attack_prior == "learned" else None)
    variables = [params.param]
    label_logits = None
    if settings.attack_label == "joint":
        label_logits = torch.zeros(len(flat_labels), public.spec.num_classes, requires_grad=True)
        variables.append(label_logits)
    scale = _whitening(model, first, public, groups) if settings.attack_objective == "whitened-l2" else None
    objective = OBJECTIVES.get(settings.attack_objective)
    onehot = F.one_hot(flat_labels, public.spec.num_classes).float()

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        images = params.images()
        soft = onehot if label_logits is None else F.softmax(label_logits, -1)
        pred = flatten(predicted_update(model, alpha_rows, images, soft, owner, step, rule), groups)
        match = objective(pred, obs_rows, scale)
        tv = total_variation(images).view(rows, per_capture).mean(1)
        return match, match + settings.attack_tv * tv

    optimise(variables, losses, settings, rows, callbacks)
    match = losses()[0].detach()
    best = match.view(restarts, n_cap).argmin(0)
    chosen = best * n_cap + torch.arange(n_cap)
    with torch.no_grad():
        images = params.images().view(rows, per_capture, *shape[1:])[chosen]
        final_labels = (flat_labels if label_logits is None else label_logits.argmax(-1)).view(rows, -1)[chosen]
    if settings.attack_denoise:
        images = torch.where(images > settings.attack_kappa, torch.zeros_like(images), images)
    seconds = (time.perf_counter() - start_time) / n_cap
    return [Reconstruction(t.capture_id, images[i].detach().cpu(), final_labels[i].cpu(),
                           float(match[chosen[i]]), seconds) for i, t in enumerate(targets)]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block: every evaluation of the double backward creates
    thousands of autograd objects but no reference cycles, so collection passes only cost time (6 % of an
    ADRA iteration in a perf profile). The previous state is restored on exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def optimise(variables: list[torch.Tensor], losses: Callable[[], tuple[torch.Tensor, torch.Tensor]],
             settings: AttackSettings, rows: int, callbacks: Sequence[ProgressCallback]) -> None:
    """Minimise ``losses()[1].sum()`` over ``variables`` with the configured optimiser; callbacks see every
    iteration."""
    with gc_paused():
        _run_optimiser(variables, losses, settings, rows, callbacks)


def _run_optimiser(variables: list[torch.Tensor], losses: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   settings: AttackSettings, rows: int, callbacks: Sequence[ProgressCallback]) -> None:
    iterations = settings.attack_iterations
    if settings.attack_optimizer == "lbfgs":
        opt = torch.optim.LBFGS(variables, lr=settings.step_size(), max_iter=iterations, max_eval=iterations,
                                history_size=20, line_search_fn="strong_wolfe")
        count = [0]

        def closure() -> torch.Tensor:
            opt.zero_grad()
            _, total = losses()
            loss = total.sum()
            loss.backward(inputs=variables)
            count[0] += 1
            for cb in callbacks:
                cb(Progress(count[0], iterations, rows, float(loss.detach()) / rows))
            return loss

        opt.step(closure)
        return
    opt = torch.optim.Adam(variables, lr=settings.step_size())
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (0.5, 0.75, 0.9)], 0.3)
    for it in range(iterations):
        opt.zero_grad()
        _, total = losses()
        loss = total.sum()
        loss.backward(inputs=variables)
        opt.step()
        sched.step()
        for cb in callbacks:
            cb(Progress(it + 1, iterations, rows, float(loss.detach()) / rows))
