"""Membership-inference metrics: the paper's accuracy and advantage, and today's ROC-based ones.

Scores are "higher means member". ``roc`` sweeps every distinct score as a threshold (a sample is called a
member when its score is >= the threshold). TPR at a fixed FPR is the largest TPR among the thresholds whose FPR
does not exceed it (LiRA's convention); AUC is the Mann-Whitney statistic, ties counted one half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LOW_FPRS = (0.01, 0.001)

FEW_POSITIVES = 10   # a rate resting on fewer true positives is reported as too few to trust


def _check(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(members).astype(bool).ravel()
    if len(s) != len(m):
        raise ValueError(f"{len(s)} scores but {len(m)} membership labels")
    if not m.any() or m.all():
        raise ValueError("membership metrics need at least one member and one non-member")
    if not np.isfinite(s).all():
        raise ValueError("membership scores must be finite")
    return s, m


def roc(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf and ending at (1, 1)."""
    s, m = _check(scores, members)
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(m)[last_of_tie]
    fp = np.cumsum(~m)[last_of_tie]
    fpr = np.r_[0.0, fp / (~m).sum()]
    tpr = np.r_[0.0, tp / m.sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """P(score of a random member > score of a random non-member) + 0.5·P(tie)."""
    s, m = _check(scores, members)
    ranks = _average_ranks(s)
    n_pos, n_neg = m.sum(), (~m).sum()
    return float((ranks[m].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_vals))[0] + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, max_fpr: float) -> float:
    fpr, tpr, _ = roc(scores, members)
    return float(tpr[fpr <= max_fpr].max())


@dataclass(frozen=True)
class MembershipMetrics:
    n_members: int
    n_nonmembers: int
    accuracy: float      # the paper's attack accuracy, at the attack's own decision threshold
    advantage: float     # 2·accuracy − 1 (the paper's Eq. 11), on balanced sets
    precision: float
    recall: float
    f1: float
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    best_accuracy: float  # at the best threshold: what a calibrated attacker could reach
    auc_low: float = float("nan")    # 95% bootstrap interval of the AUC (members and non-members resampled apart)
    auc_high: float = float("nan")
    tp_at_01pct_fpr: int = 0          # the true positives behind tpr_at_01pct_fpr (below FEW_POSITIVES: flagged)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def membership_metrics(scores: np.ndarray, members: np.ndarray, threshold: float = 0.5) -> MembershipMetrics:
    """Every metric of the report for one score set; ``threshold`` is the attack's decision rule."""
    s, m = _check(scores, members)
    called = s >= threshold
    tp, fp = int((called & m).sum()), int((called & ~m).sum())
    fn, tn = int((~called & m).sum()), int((~called & ~m).sum())
    accuracy = (tp + tn) / len(s)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr, tpr, _ = roc(s, m)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    best = float(((tpr * n_pos + (1 - fpr) * n_neg) / len(s)).max())
    low_tpr = float(tpr[fpr <= LOW_FPRS[1]].max())
    lo, hi = auc_interval(s, m)
    return MembershipMetrics(n_pos, n_neg, accuracy, 2 * accuracy - 1, precision, recall, f1, auc(s, m),
                             float(tpr[fpr <= LOW_FPRS[0]].max()), low_tpr, best, lo, hi, round(low_tpr * n_pos))


def auc_interval(scores: np.ndarray, members: np.ndarray, resamples: int = 200, seed: int = 0
                 ) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the AUC: members and non-members are resampled separately (the
    design is balanced by construction); a fixed seed keeps reports reproducible."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(members), np.flatnonzero(~members)
    if not len(pos) or not len(neg):
        return float("nan"), float("nan")
    values = []
    for _ in range(resamples):
        pick = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(auc(scores[pick], members[pick]))
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)
