"""ADRA: reconstruct a client's α-batch from its architecture update, many captures in one optimisation.

The objective is assembled from pure pieces (:mod:`attacker.reconstruct.objectives`,
:mod:`attacker.reconstruct.update`); the optimisation is the shared loop (:mod:`attacker.reconstruct.loop`).
Captures that share weights (all of them under ``architecture-only``, one round's under ``wire``) are optimised
together, restarts included, as one batch; callbacks see every iteration. Inputs are threat-model targets
and public knowledge only: no ground truth.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.labels import class_templates, match_labels
from attacker.reconstruct.loop import (
    ImageParams,
    ProgressCallback,
    Reconstruction,
    Rows,
    initial_images,
    optimise,
)
from attacker.reconstruct.model import attack_model
from attacker.reconstruct.objectives import OBJECTIVES, total_variation
from attacker.reconstruct.prior import ImageVAE
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import AttackTarget, require_finite
from attacker.reconstruct.update import flatten, predicted_update


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
    stage, groups = settings.adra_stage(), list(public.spec.alpha_groups())
    rule, n_cap = first.rule, len(targets)
    rows = Rows(n_cap, settings.attack_restarts)
    per_capture = rule.steps * rule.batch_size
    alpha0 = {g: torch.stack([t.alpha_before[g] for t in targets]) for g in groups}
    observed = flatten({g: torch.stack([t.alpha_delta[g] for t in targets]) for g in groups}, groups)
    require_finite("Δα", [observed])
    labels = match_labels(class_templates(model, alpha0, public, rule), observed, per_capture)  # [C, S*B]

    alpha_rows = {g: rows.repeat(a) for g, a in alpha0.items()}
    obs_rows = rows.repeat(observed)
    owner = torch.arange(rows.count).repeat_interleave(per_capture)
    step = torch.arange(rule.steps).repeat_interleave(rule.batch_size).repeat(rows.count)
    flat_labels = rows.repeat(labels).flatten()
    shape = (rows.count * per_capture, public.spec.in_channels, public.spec.image_size, public.spec.image_size)
    params = ImageParams(initial_images(stage.init, flat_labels, public, shape, generator),
                         prior if stage.prior == "learned" else None)
    variables = [params.param]
    label_logits = None
    if settings.attack_label == "joint":
        label_logits = torch.zeros(len(flat_labels), public.spec.num_classes, requires_grad=True)
        variables.append(label_logits)
    scale = _whitening(model, first, public, groups) if stage.objective == "whitened-l2" else None
    objective = OBJECTIVES.get(stage.objective)
    onehot = F.one_hot(flat_labels, public.spec.num_classes).float()

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        if settings.attack_denoise_every_iteration:
            params.denoise_(settings.attack_kappa)
        images = params.images()
        soft = onehot if label_logits is None else F.softmax(label_logits, -1)
        pred = flatten(predicted_update(model, alpha_rows, images, soft, owner, step, rule), groups)
        match = objective(pred, obs_rows, scale)
        tv = total_variation(images).view(rows.count, per_capture).mean(1)
        return match, match + stage.tv * tv

    optimise(variables, losses, stage, rows.count, callbacks)
    match = losses()[0].detach()
    chosen = rows.best(match)
    with torch.no_grad():
        images = params.images().view(rows.count, per_capture, *shape[1:])[chosen]
        final_labels = (flat_labels if label_logits is None else label_logits.argmax(-1)).view(rows.count, -1)[chosen]
    if settings.attack_denoise:
        images = torch.where(images > settings.attack_kappa, torch.zeros_like(images), images)
    seconds = (time.perf_counter() - start_time) / n_cap
    return [Reconstruction(t.capture_id, images[i].detach().cpu(), final_labels[i].cpu(),
                           float(match[chosen[i]]), seconds) for i, t in enumerate(targets)]
