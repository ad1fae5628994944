"""Membership metrics against values computed by hand."""

import numpy as np
import pytest

from attacker.membership.metrics import auc, membership_metrics, roc, tpr_at_fpr

# members score 0.9, 0.8, 0.4; non-members 0.7, 0.3, 0.2, 0.1
SCORES = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
MEMBER = np.array([1, 1, 1, 0, 0, 0, 0], bool)


def test_auc_counts_ordered_pairs():
    # pairs (member > non-member): 0.9 beats 4, 0.8 beats 4, 0.4 beats 3 -> 11 of 12
    assert auc(SCORES, MEMBER) == pytest.approx(11 / 12)


def test_auc_counts_ties_as_half():
    assert auc(np.array([0.5, 0.5, 0.5, 0.1]), np.array([1, 0, 1, 0], bool)) == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)


def test_roc_steps_through_every_threshold():
    fpr, tpr, thr = roc(SCORES, MEMBER)
    assert fpr.tolist() == pytest.approx([0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1])
    assert thr[0] == np.inf and thr[1:].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1])


def test_tpr_at_fpr_takes_the_best_threshold_within_the_budget():
    assert tpr_at_fpr(SCORES, MEMBER, 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(SCORES, MEMBER, 0.2) == pytest.approx(2 / 3)
    assert tpr_at_fpr(SCORES, MEMBER, 0.25) == pytest.approx(1.0)


def test_threshold_metrics():
    m = membership_metrics(SCORES, MEMBER, threshold=0.5)
    # called members: 0.9, 0.8 (members) and 0.7 (non-member): tp 2, fp 1, fn 1, tn 3
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.advantage == pytest.approx(2 * 5 / 7 - 1)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.best_accuracy == pytest.approx(6 / 7)  # threshold 0.4: tp 3, tn 3
    assert m.tpr_at_1pct_fpr == pytest.approx(2 / 3)


def test_rejects_one_sided_or_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one member and one non-member"):
        auc(np.array([0.1, 0.2]), np.array([1, 1], bool))
    with pytest.raises(ValueError, match="2 scores but 3"):
        auc(np.array([0.1, 0.2]), np.array([1, 0, 1], bool))


def test_random_scores_have_auc_near_one_half():
    rng = np.random.default_rng(0)
    assert abs(auc(rng.random(4000), rng.random(4000) < 0.5) - 0.5) < 0.03
