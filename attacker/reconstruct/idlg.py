"""Analytic label recovery from the classifier layer's update (iDLG, and a batch-level count variant).

With cross entropy, the gradient of the classifier bias for one sample is ``softmax − onehot``: every entry
is positive except the true class's. For a batch of B samples it is ``p̄ − n/B`` (mean prediction minus
the label counts over B), so ``n_c = B·(p̄_c − g_c)``.

What the attacker sees is Δb after the client's T SGD steps with momentum μ, weight decay λ and
gradient-norm clipping (coefficient s_t ≤ 1): ``−Δb/η = Σ_t c_t (s_t g_t + λ b_t)`` with momentum weights
``c_t = (1 − μ^{T−t})/(1 − μ)``. The recovery

* removes the weight decay with b_t ≈ b_0 (λ is small);
* takes p̄ from the attacker's model on public images (exact for one sample: it is not needed there);
* takes s from the classes that are absent from the batch (their entries are s·C·p̄_c), or s = 1 when a
  single step's full update shows that the client did not clip.

One sample, one step: the label is the most negative entry, whatever s is: exact (tested). Counts are
rounded to the ``B·T`` labels by largest remainders; the order of labels within the trajectory is not
recoverable from a sum, so they are laid out class by class.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from attacker.reconstruct.knowledge import PublicKnowledge
from attacker.reconstruct.threat import AttackTarget, ThetaRule
from fednas.supernet import SuperNet

BIAS = "classifier.bias"
UNCLIPPED = 1 - 1e-3
PUBLIC_IMAGES = 256


def momentum_weights(rule: ThetaRule) -> np.ndarray:
    t = np.arange(rule.steps)
    if rule.momentum == 0:
        return np.ones(rule.steps)
    return (1 - rule.momentum ** (rule.steps - t)) / (1 - rule.momentum)


def effective_bias_gradient(theta0: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor],
                            rule: ThetaRule) -> torch.Tensor:
    """``Σ_t c_t s_t g_t`` of the classifier bias, from the observed Δb."""
    weights = momentum_weights(rule)
    return -delta[BIAS].double() / rule.lr - rule.weight_decay * theta0[BIAS].double() * float(weights.sum())


def _unclipped(theta0: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], rule: ThetaRule) -> bool:
    """One step and a full update whose gradient part is shorter than the clip norm: s = 1 exactly."""
    if rule.steps != 1 or rule.clip <= 0:
        return rule.clip <= 0
    norm = torch.sqrt(functools.reduce(torch.add, [
        ((-delta[k].double() / rule.lr - rule.weight_decay * theta0[k].double()) ** 2).sum() for k in delta]))
    return bool(norm < rule.clip * UNCLIPPED)


def mean_prediction(model: SuperNet, theta: Mapping[str, torch.Tensor], alphas: Mapping[str, torch.Tensor],
                    public: PublicKnowledge) -> torch.Tensor:
    """p̄: the attacker model's mean softmax over public images (θ_t, α during the θ steps)."""
    with torch.no_grad():
        logits = functional_call(model, dict(theta), (public.aux_images[:PUBLIC_IMAGES],), {"alphas": dict(alphas)})
    return F.softmax(logits.double(), -1).mean(0)


def label_counts(grad: torch.Tensor, p_bar: torch.Tensor, rule: ThetaRule, total: int,
                 scale: float | None) -> np.ndarray:
    """Integer label counts summing to ``total`` from the effective bias gradient (see the module text)."""
    weights = momentum_weights(rule)
    c_sum, c_mean = float(weights.sum()), float(weights.mean())
    g, p = grad.numpy(), p_bar.numpy()
    per_step = total / rule.steps
    s = scale if scale is not None else _absent_scale(g, p, c_sum, np.ones(len(g), bool))
    for _ in range(3 if scale is None else 1):
        exact = np.clip(per_step * (rule.steps * p - g / (s * c_mean)), 0, None)
        counts = _largest_remainders(exact, total)
        if scale is None and (counts == 0).any():
            s = _absent_scale(g, p, c_sum, counts == 0)
    return counts


def _absent_scale(g: np.ndarray, p: np.ndarray, c_sum: float, absent: np.ndarray) -> float:
    mask = absent & (g > 0)
    if not mask.any():
        return 1.0
    return float(max(g[mask].sum() / (c_sum * p[mask].sum()), 1e-12))


def _largest_remainders(exact: np.ndarray, total: int) -> np.ndarray:
    exact = exact * (total / exact.sum()) if exact.sum() > 0 else np.full(len(exact), total / len(exact))
    counts: np.ndarray = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts))[: total - counts.sum()]:
        counts[k] += 1
    return counts


def analytic_labels(model: SuperNet, target: AttackTarget, public: PublicKnowledge,
                    alphas: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The labels of the client's θ batches (``steps * B`` of them) from Δθ; ``alphas`` as in the θ steps."""
    if target.theta_delta is None or target.schedule is None or BIAS not in target.theta_delta:
        raise ValueError(f"{target.capture_id}: no classifier bias update to recover labels from")
    rule = target.schedule.theta
    grad = effective_bias_gradient(target.theta, target.theta_delta, rule)
    total = rule.steps * rule.batch_size
    if total == 1:
        return grad.argmin().view(1)
    p_bar = mean_prediction(model, target.theta, alphas, public)
    counts = label_counts(grad, p_bar, rule, total, 1.0 if _unclipped(target.theta, target.theta_delta, rule)
                          else None)
    return torch.as_tensor(np.repeat(np.arange(len(counts)), counts))
