"""Label recovery from Δα.

* ``match`` — nearest class gradient: for every class, the update that a few public images of that
  class would produce under the attacker's model is a template; B = 1 takes the template with the
  highest cosine to the observed update, B > 1 solves non-negative least squares over the templates and
  rounds the mixture to B labels (largest remainders).
* ``joint`` — soft labels optimised together with the images (the paper's joint optimisation, as in
  DLG); see :mod:`attacker.reconstruct.adra`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import nnls

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.threat import UpdateRule
from attacker.reconstruct.update import AlphaModel, flatten, predicted_update


def class_templates(model: AlphaModel, alpha_before: Mapping[str, torch.Tensor], public: PublicKnowledge,
                    rule: UpdateRule, per_class: int = 4) -> torch.Tensor:
    """[C, classes, P]: mean single-image update per class, under each capture's α (no graph kept).

    Captures of one round share the broadcast α, so the templates are computed once per distinct α."""
    groups = list(alpha_before)
    rows = flatten({g: a.detach() for g, a in alpha_before.items()}, groups)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    one = torch.zeros(len(distinct), dtype=torch.long).scatter_(0, inverse.cpu(), torch.arange(len(rows)))
    alpha_before = {g: a[one.to(a.device)] for g, a in alpha_before.items()}
    captures = len(distinct)
    classes = public.spec.num_classes
    picks = torch.cat([(public.aux_labels == c).nonzero().squeeze(1)[:per_class] for c in range(classes)])
    images = public.aux_images[picks].to(next(iter(alpha_before.values())).device)
    onehot = F.one_hot(public.aux_labels[picks], classes).float().to(images.device)
    n = len(picks)
    # one pseudo-capture per (capture, public image): every image gets the capture's α
    alphas = {g: a.detach().repeat_interleave(n, dim=0) for g, a in alpha_before.items()}
    single = UpdateRule(rule.optimizer, rule.lr, rule.weight_decay, steps=1, batch_size=1)
    owner = torch.arange(captures * n, device=images.device)
    update = predicted_update(model, alphas, images.repeat(captures, 1, 1, 1), onehot.repeat(captures, 1),
                              owner, torch.zeros_like(owner), single, create_graph=False)
    flat = flatten({g: u.detach() for g, u in update.items()}, groups).view(captures, n, -1)
    labels = public.aux_labels[picks].to(images.device)
    return torch.stack([flat[:, labels == c].mean(1) for c in range(classes)], dim=1)[inverse]


def match_labels(templates: torch.Tensor, observed: torch.Tensor, count: int) -> torch.Tensor:
    """[C, count] labels from [C, classes, P] templates and [C, P] observed updates."""
    if count == 1:
        cos = F.cosine_similarity(templates, observed.unsqueeze(1), dim=-1)
        return cos.argmax(1, keepdim=True)
    out = []
    for t, o in zip(templates.double().cpu().numpy(), observed.double().cpu().numpy(), strict=True):
        weights, _ = nnls(t.T, o)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
        exact = weights * count
        counts = np.floor(exact).astype(int)
        for k in np.argsort(-(exact - counts))[: count - counts.sum()]:
            counts[k] += 1
        out.append(np.repeat(np.arange(len(counts)), counts))
    return torch.as_tensor(np.stack(out), device=observed.device)
