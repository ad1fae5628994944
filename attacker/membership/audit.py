"""An empirical lower bound on ε from a membership attack (the DP audit), with Clopper–Pearson intervals.

For an (ε, δ)-DP mechanism every test that tells members from non-members obeys TPR ≤ e^ε·FPR + δ, and the same
with the roles of the errors exchanged; so ε ≥ ln((1 − δ − FPR)/FNR) and ε ≥ ln((1 − δ − FNR)/FPR). With finite
samples the bound uses one-sided Clopper–Pearson upper limits of FPR and FNR, so that it holds with the stated
confidence. The threshold is chosen on one half of the scored examples and the bound computed on the other, so
that choosing it does not inflate the bound. An audited ε above the accountant's is a bug in one of the two.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval of k successes in n trials at ``confidence``."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def upper_limit(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson upper limit of a rate k/n at ``confidence``."""
    if n <= 0 or k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def epsilon_bound(tp: int, fn: int, fp: int, tn: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε the counts prove at ``confidence`` (0 when they prove nothing)."""
    fpr_hi = upper_limit(fp, fp + tn, confidence)
    fnr_hi = upper_limit(fn, fn + tp, confidence)
    candidates = [0.0]
    for a, b in ((fpr_hi, fnr_hi), (fnr_hi, fpr_hi)):
        if 1 - delta - a > 0 and b > 0:
            candidates.append(math.log((1 - delta - a) / b))
    return max(candidates)


@dataclass(frozen=True)
class Audit:
    epsilon_lower: float          # proven at ``confidence`` on the held-out half
    threshold: float              # chosen on the other half
    tp: int
    fn: int
    fp: int
    tn: int
    delta: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(scores: np.ndarray, members: np.ndarray, delta: float, rng: np.random.Generator,
          confidence: float = 0.95) -> Audit:
    """Choose the threshold on a random half of the examples (by the bound it gives there), then bound ε on the
    other half with that threshold."""
    scores, members = np.asarray(scores, np.float64), np.asarray(members, bool)
    order = rng.permutation(len(scores))
    pick, held = order[: len(order) // 2], order[len(order) // 2:]
    best = (-1.0, math.inf)
    candidates = np.unique(np.quantile(scores[pick], np.linspace(0, 1, 257))) if len(pick) else np.zeros(1)
    for t in candidates:
        counts = _counts(scores[pick] >= t, members[pick])
        best = max(best, (epsilon_bound(*counts, delta, confidence), float(t)))
    threshold = best[1]
    tp, fn, fp, tn = _counts(scores[held] >= threshold, members[held])
    return Audit(epsilon_bound(tp, fn, fp, tn, delta, confidence), threshold, tp, fn, fp, tn, delta, confidence)


def _counts(predicted: np.ndarray, members: np.ndarray) -> tuple[int, int, int, int]:
    return (int((predicted & members).sum()), int((~predicted & members).sum()),
            int((predicted & ~members).sum()), int((~predicted & ~members).sum()))
