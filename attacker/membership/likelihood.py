"""Membership scores from reference models: LiRA (offline and online) and RMIA, as pure functions of posteriors.

Both attacks ask how the target's answer on an example compares with what models that did or did not train on it
answer; they differ in what they compare with.

* **LiRA** (Carlini et al., S&P 2022). Per example, the logit-scaled confidence of the true class,
  φ = log p_y − log Σ_{k≠y} p_k, is close to Gaussian over models trained with (IN) or without (OUT) the example.
  Offline, the score is how far the target's φ lies above the OUT fit, z = (φ − μ_out)/σ_out; online, it is the
  log-likelihood ratio log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out). Both are mapped into (0, 1) by :func:`unit`
  (0.5 at z = 0 or a ratio of 1), which keeps their order where Φ or a logistic would round to 1. With few
  reference models a variance pooled over all examples is steadier than per-example ones (``global_variance``,
  the paper's advice below 64 shadows).
* **RMIA** (Zarifzadeh et al., ICML 2024). The likelihood ratio of an example x against population samples z:
  LR(x) = (p_target(x)/p_ref(x)), with p_ref the mean over reference models of the probability of the true class;
  the score is the share of population samples z with LR(x)/LR(z) > γ. Offline (reference models trained only
  without x), p_ref(x) is corrected by ``a``: p_ref = ½((1 + a)·p_out + (1 − a)), the paper's linear
  approximation of the missing IN models.

Every function takes arrays only; which model answered, and which examples each reference model trained on, is the
caller's business (the threat model: the attacker has the target's posteriors and its own reference models).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

EPS = 1e-30
MIN_STD = 1e-3


def true_class_probability(posteriors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y of every row: [..., N, K] posteriors and [N] labels -> [..., N]."""
    p = np.asarray(posteriors, np.float64)
    index = np.broadcast_to(np.asarray(labels, np.int64), p.shape[:-1])[..., None]
    return np.take_along_axis(p, index, axis=-1)[..., 0]


def logit_confidence(posteriors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic φ = log p_y − log Σ_{k≠y} p_k ([..., N, K] -> [..., N]). The sum runs over the other
    classes' own probabilities, not 1 − p_y: float32 posteriors of an overfitted model round p_y to exactly 1, and
    1 − p_y would then clip every such answer to one value, tying members with easy non-members."""
    p_all = np.asarray(posteriors, np.float64)
    index = np.broadcast_to(np.asarray(labels, np.int64), p_all.shape[:-1])[..., None]
    p = np.take_along_axis(p_all, index, axis=-1)[..., 0]
    others = np.ones(p_all.shape, bool)
    np.put_along_axis(others, index, False, axis=-1)
    rest = np.where(others, p_all, 0.0).sum(-1)
    return np.log(np.clip(p, EPS, None)) - np.log(np.clip(rest, EPS, None))


def _fit(phi: np.ndarray, mask: np.ndarray, global_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std of φ over the reference models where ``mask`` holds ([R, N] each)."""
    counts = mask.sum(0)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} example(s) have no reference model on this side; train more "
                         "reference models (each example needs IN and OUT models for online LiRA, OUT for offline)")
    mean = np.where(mask, phi, 0.0).sum(0) / counts
    if global_variance:
        pooled = (np.where(mask, phi - mean, 0.0) ** 2).sum() / max(int(counts.sum()) - 1, 1)
        return mean, np.full_like(mean, max(math.sqrt(pooled), MIN_STD))
    var = (np.where(mask, phi - mean, 0.0) ** 2).sum(0) / np.maximum(counts - 1, 1)
    return mean, np.maximum(np.sqrt(var), MIN_STD)


def lira_offline(phi_target: np.ndarray, phi_refs: np.ndarray, inside: np.ndarray,
                 global_variance: bool = True, outside: np.ndarray | None = None) -> np.ndarray:
    """Offline LiRA: the OUT z-score (φ − μ_out)/σ_out per example, through :func:`unit`. ``phi_refs`` [R, N]
    are the reference models' φ on the queries, ``inside`` [R, N] whether each trained on each query; only OUT
    models are used (``outside``, by default every model that is not IN)."""
    out = ~np.asarray(inside, bool) if outside is None else np.asarray(outside, bool)
    mean, std = _fit(np.asarray(phi_refs, np.float64), out, global_variance)
    return unit((phi_target - mean) / std)


def unit(statistic: np.ndarray) -> np.ndarray:
    """A monotone map of a real statistic into (0, 1), 0.5 at 0, that keeps its order far into the tails (Φ and the
    logistic round to exactly 1 beyond z ≈ 8 and 37 in float64, tying the most confident members with each other
    and with confident non-members, which empties the low-FPR end of the ROC)."""
    return np.asarray(0.5 + np.arctan(np.asarray(statistic, np.float64)) / np.pi)


def lira_online(phi_target: np.ndarray, phi_refs: np.ndarray, inside: np.ndarray,
                global_variance: bool = True, outside: np.ndarray | None = None) -> np.ndarray:
    """Online LiRA: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) per example."""
    phi_refs, inside = np.asarray(phi_refs, np.float64), np.asarray(inside, bool)
    mu_in, sd_in = _fit(phi_refs, inside, global_variance)
    mu_out, sd_out = _fit(phi_refs, ~inside if outside is None else np.asarray(outside, bool), global_variance)
    return np.asarray(norm.logpdf(phi_target, mu_in, sd_in) - norm.logpdf(phi_target, mu_out, sd_out))


def rmia(p_target_x: np.ndarray, p_refs_x: np.ndarray, p_target_z: np.ndarray, p_refs_z: np.ndarray,
         gamma: float = 1.0, a: float = 1.0, inside_x: np.ndarray | None = None) -> np.ndarray:
    """RMIA scores of the queries x against the population samples z.

    ``p_*`` are true-class probabilities: the target's [N] / [M] and the reference models' [R, N] / [R, M].
    ``inside_x`` [R, N] marks reference models that trained on x (online); without it every reference model is
    OUT for x (offline) and ``a`` corrects p_ref(x). Population samples are OUT for every model by construction.
    """
    p_refs_x, p_refs_z = np.asarray(p_refs_x, np.float64), np.asarray(p_refs_z, np.float64)
    if inside_x is None:          # offline: every reference is OUT; the paper's linear correction
        p_ref_x = 0.5 * ((1 + a) * p_refs_x.mean(0) + (1 - a))
        p_ref_z = 0.5 * ((1 + a) * p_refs_z.mean(0) + (1 - a))
    else:                         # online: IN and OUT models together estimate p(x) and p(z)
        p_ref_x, p_ref_z = p_refs_x.mean(0), p_refs_z.mean(0)
    ratio_x = np.asarray(p_target_x, np.float64) / np.maximum(p_ref_x, EPS)
    ratio_z = np.asarray(p_target_z, np.float64) / np.maximum(p_ref_z, EPS)
    # share of z with ratio_x / ratio_z > gamma, i.e. ratio_z < ratio_x / gamma, by binary search on sorted z
    sorted_z = np.sort(ratio_z)
    return np.searchsorted(sorted_z, ratio_x / gamma, side="left") / len(sorted_z)
