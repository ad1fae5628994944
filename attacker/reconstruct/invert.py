"""Weight-update inversion (Inverting Gradients on Δθ) and the joint Δα + Δθ attack, many captures at once.

Both replay the client's local search on dummy data (:mod:`attacker.reconstruct.trajectory`): a single gradient when
the client took one θ step, its whole SGD trajectory (momentum, weight decay, clipping) otherwise.

* ``theta``: dummy θ batches; labels recovered analytically from the classifier bias
  (:mod:`attacker.reconstruct.idlg`); α at every θ step is known (exact when the α steps come first) or interpolated
  between α_t and α_{t+1}; the loss is the objective on Δθ plus TV; images are boxed pixels (sigmoid) or a
  learned prior's latent.
* ``joint``: dummy α batches as well, the α steps simulated too, and the loss
  ``w·match(Δα) + (1 − w)·match(Δθ)`` (``joint-alpha-weight``). With ``joint-data = shared`` the α and θ
  steps used the same images (one set of dummy images); with ``disjoint`` (D^α and D^θ splits) they are
  separate variables, so α can only help through the trajectory they share.

Captures that share θ_t are optimised together, restarts included (rows), as in ADRA. The inputs are
threat-model targets and public knowledge only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from attacker.reconstruct.idlg import analytic_labels
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
from attacker.reconstruct.model import attack_model, theta_model
from attacker.reconstruct.objectives import OBJECTIVES, total_variation
from attacker.reconstruct.prior import ImageVAE
from attacker.reconstruct.row_replay import replay_rows_flat
from attacker.reconstruct.settings import AttackSettings
from attacker.reconstruct.threat import AttackTarget, NotApplicable, Schedule, require_finite
from attacker.reconstruct.trajectory import flat_delta, interpolated_alphas, replay_local_search_flat
from attacker.reconstruct.update import flatten
from fednas.fastnet import FastSearchNet


def _check(targets: Sequence[AttackTarget], settings: AttackSettings, joint: bool) -> Schedule:
    first = targets[0]
    if any(t.theta_delta is None for t in targets) or first.schedule is None:
        raise NotApplicable("no Δθ on the wire (share-weights = false, or an α-only "
                            "threat model)")
    if any(t.theta_key != first.theta_key or t.schedule != first.schedule for t in targets):
        raise ValueError("θ attacks batch captures that share weights and local-search schedule")
    require_finite("Δθ", (v for t in targets for v in (t.theta_delta or {}).values()))
    if joint:
        require_finite("Δα", (v for t in targets for v in t.alpha_delta.values()))
    sched = first.schedule
    count = sched.theta.steps * sched.theta.batch_size
    if joint and settings.joint_data == "disjoint":
        count += sched.alpha.steps * sched.alpha.batch_size
    if count > settings.inversion_max_images:
        raise NotApplicable(f"the update holds {count} images, more than inversion-max-images = "
                            f"{settings.inversion_max_images} (raise it to attack; each image costs a double "
                            f"backward per iteration)")
    if joint and settings.joint_data == "shared" and (sched.alpha.steps * sched.alpha.batch_size
                                                      != sched.theta.steps * sched.theta.batch_size):
        raise ValueError("joint-data = shared needs as many α images as θ images (the same batches)")
    return sched


def _alpha_labels(targets: Sequence[AttackTarget], public: PublicKnowledge, settings: AttackSettings,
                  alpha0: dict[str, torch.Tensor], count: int) -> torch.Tensor:
    """α-batch labels by nearest class gradient (as ADRA): [C, count]."""
    first = targets[0]
    model = attack_model(public.spec, public.mean, public.std, first.theta, fast=settings.attack_fast)
    observed = flatten({g: torch.stack([t.alpha_delta[g] for t in targets]) for g in alpha0}, list(alpha0))
    return match_labels(class_templates(model, alpha0, public, first.rule), observed, count)


def invert_batch(targets: Sequence[AttackTarget], public: PublicKnowledge, settings: AttackSettings,
                 prior: ImageVAE | None, generator: torch.Generator, joint: bool = False,
                 callbacks: Sequence[ProgressCallback] = ()) -> list[Reconstruction]:
    """Reconstruct the θ batches (``joint``: the α batches, then the θ batches) of captures sharing θ_t."""
    start_time = time.perf_counter()
    sched = _check(targets, settings, joint)
    stage = settings.inversion_stage()
    model = theta_model(public.spec, public.mean, public.std)
    net, replay = ((FastSearchNet(model), replay_rows_flat) if settings.inversion_fast
                   else (model, replay_local_search_flat))
    groups, names = list(public.spec.alpha_groups()), list(targets[0].theta)
    n_cap, classes = len(targets), public.spec.num_classes
    rows = Rows(n_cap, settings.attack_restarts)
    n_a = sched.alpha.steps * sched.alpha.batch_size
    separate_alpha = joint and settings.joint_data == "disjoint"
    alpha0 = {g: torch.stack([t.alpha_before[g] for t in targets]) for g in groups}
    alpha1 = {g: alpha0[g] + torch.stack([t.alpha_delta[g] for t in targets]) for g in groups}
    known = None if joint else interpolated_alphas(sched, alpha0, alpha1)
    theta_labels = torch.stack([analytic_labels(model, t, public, {g: alpha1[g][i] for g in groups})
                                for i, t in enumerate(targets)])                       # [C, n_t]
    labels = (torch.cat([_alpha_labels(targets, public, settings, alpha0, n_a), theta_labels], 1)
              if separate_alpha else theta_labels)
    per_row = labels.shape[1]
    flat_labels = rows.repeat(labels).flatten()
    shape = (rows.count * per_row, public.spec.in_channels, public.spec.image_size, public.spec.image_size)
    params = ImageParams(initial_images(stage.init, flat_labels, public, shape, generator),
                         prior if stage.prior == "learned" else None)
    soft = F.one_hot(flat_labels, classes).float().view(rows.count, per_row, classes)
    deltas = [t.theta_delta for t in targets if t.theta_delta is not None]      # all of them (_check)
    obs_theta = rows.repeat(flat_delta({k: torch.stack([d[k] for d in deltas]) for k in names}, names))
    obs_alpha = rows.repeat(flatten({g: alpha1[g] - alpha0[g] for g in groups}, groups))
    a0_rows = {g: rows.repeat(a) for g, a in alpha0.items()}
    known_rows = None if known is None else {g: rows.repeat(k) for g, k in known.items()}
    objective = OBJECTIVES.get(stage.objective)
    weight = settings.joint_alpha_weight if joint else 0.0

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        images = params.images().view(rows.count, per_row, *shape[1:])
        a_img, a_soft = images[:, :n_a], soft[:, :n_a]        # theta-only: unused (α is known)
        t_img, t_soft = (images[:, n_a:], soft[:, n_a:]) if separate_alpha else (images, soft)
        d_alpha, d_theta = replay(net, sched, targets[0].theta, a0_rows, a_img, a_soft, t_img, t_soft, known_rows)
        match = (1 - weight) * objective(d_theta, obs_theta, None)     # both [R, P] in the order of names
        if joint:
            match = match + weight * objective(flatten(d_alpha, groups), obs_alpha, None)
        tv = total_variation(images.flatten(0, 1)).view(rows.count, per_row).mean(1)
        return match, match + stage.tv * tv

    optimise([params.param], losses, stage, rows.count, callbacks, lambda: params.images().detach())
    with torch.no_grad():
        match = losses()[0]
        chosen = rows.best(match)
        images = params.images().view(rows.count, per_row, *shape[1:])[chosen]
    seconds = (time.perf_counter() - start_time) / n_cap
    return [Reconstruction(t.capture_id, images[i].detach(), labels[i], float(match[chosen[i]]), seconds)
            for i, t in enumerate(targets)]
