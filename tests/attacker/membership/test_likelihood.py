"""LiRA and RMIA on a synthetic problem with a known answer, the look-alike control, and the ε audit.

The synthetic problem is LiRA's own model: every example i has a difficulty μ_i (spread over models far more
than the membership effect), and a model's logit-scaled confidence on it is N(μ_i + d·[trained on i], 1). An
attack that knows μ_i from reference models separates members with AUC Φ(d / √(2(1 + 1/R))) (R OUT models
estimate μ_i); one that thresholds φ alone gets Φ(d / √(2(1 + s²))) with s the spread of μ, far less.
"""

import math

import numpy as np
import pytest
from scipy.stats import norm

from attacker.membership.audit import audit, clopper_pearson, epsilon_bound, upper_limit
from attacker.membership.likelihood import lira_offline, lira_online, logit_confidence, rmia
from attacker.membership.metrics import auc

N, R, D, SPREAD = 4000, 16, 1.0, 2.0


def synthetic(rng, shift=D):
    """(φ of the target [N], members [N], φ of R reference models [R, N], inside [R, N], population φ [R+1, M])."""
    mu = rng.normal(0, SPREAD, N)
    members = rng.permutation(np.arange(N) < N // 2)
    inside = rng.permuted(np.repeat((np.arange(R) < R // 2)[:, None], N, 1), axis=0)   # R/2 IN, R/2 OUT each
    phi_refs = mu + shift * inside + rng.normal(0, 1, (R, N))
    phi_target = mu + shift * members + rng.normal(0, 1, N)
    mu_z = rng.normal(0, SPREAD, 2000)
    phi_z = mu_z + rng.normal(0, 1, (R + 1, 2000))      # row 0: the target; nobody trained on z
    return phi_target, members, phi_refs, inside, phi_z


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_logit_confidence_is_log_odds_of_the_true_class():
    posteriors = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    np.testing.assert_allclose(logit_confidence(posteriors, np.array([0, 1])),
                               [math.log(0.7 / 0.3), math.log(0.05 / 0.95)])


def test_lira_reaches_the_analytic_auc_and_a_raw_threshold_does_not():
    rng = np.random.default_rng(0)
    phi, members, phi_refs, inside, _ = synthetic(rng)
    out_models = (~inside).sum(0).mean()
    expected = norm.cdf(D / math.sqrt(2 * (1 + 1 / out_models)))
    offline = auc(lira_offline(phi, phi_refs, inside), members)
    online = auc(lira_online(phi, phi_refs, inside), members)
    raw = auc(phi, members)
    assert abs(offline - expected) < 0.025, (offline, expected)
    assert online > expected - 0.025, (online, expected)          # online also sees the IN models
    assert abs(raw - norm.cdf(D / math.sqrt(2 * (1 + SPREAD ** 2)))) < 0.025
    assert offline > raw + 0.1


def test_rmia_with_four_reference_models_is_near_lira_with_sixteen():
    # on LiRA's own Gaussian model LiRA is the likelihood-ratio test itself; RMIA, which works on probabilities
    # (saturated near 0 and 1 here), comes within 0.06 of it with a quarter of the models (measured 0.70 vs 0.75)
    rng = np.random.default_rng(1)
    phi, members, phi_refs, inside, phi_z = synthetic(rng)
    lira = auc(lira_offline(phi, phi_refs, inside), members)
    out4 = np.array([np.flatnonzero(~inside[:, i])[:4] for i in range(N)]).T        # 4 OUT models per example
    p_refs_x = sigmoid(np.take_along_axis(phi_refs, out4, 0))
    found = auc(rmia(sigmoid(phi), p_refs_x, sigmoid(phi_z[0]), sigmoid(phi_z[1:5]), gamma=1.0, a=1.0), members)
    assert abs(found - lira) < 0.06 and found > auc(phi, members) + 0.04, (found, lira)


def test_a_look_alike_control_stays_at_chance_for_every_attack():
    rng = np.random.default_rng(2)
    phi, members, phi_refs, inside, phi_z = synthetic(rng, shift=0.0)     # members drawn like non-members
    scores = {"lira-offline": lira_offline(phi, phi_refs, inside), "lira-online": lira_online(phi, phi_refs, inside),
              "rmia": rmia(sigmoid(phi), sigmoid(phi_refs), sigmoid(phi_z[0]), sigmoid(phi_z[1:]))}
    for name, s in scores.items():
        assert abs(auc(s, members) - 0.5) < 0.03, name


def test_clopper_pearson_matches_hand_computed_beta_quantiles():
    low, high = clopper_pearson(3, 10)
    assert low == pytest.approx(0.0667395, abs=1e-6) and high == pytest.approx(0.6524529, abs=1e-6)
    assert clopper_pearson(0, 10)[0] == 0 and clopper_pearson(10, 10)[1] == 1
    assert upper_limit(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)


def test_the_epsilon_bound_on_hand_computed_counts():
    # 990 of 1000 members caught, 10 of 1000 non-members flagged; δ = 1e-5
    fpr, fnr = upper_limit(10, 1000), upper_limit(10, 1000)
    expected = math.log((1 - 1e-5 - fpr) / fnr)
    assert epsilon_bound(990, 10, 10, 990, 1e-5) == pytest.approx(expected)
    assert epsilon_bound(50, 50, 50, 50, 1e-5) == 0.0          # a coin proves nothing


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_the_audit_never_exceeds_the_true_epsilon_of_randomised_response(epsilon):
    # randomised response is exactly ε-DP: a member says "in" with e^ε/(1 + e^ε), a non-member with 1/(1 + e^ε)
    p = math.exp(epsilon) / (1 + math.exp(epsilon))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        members = rng.random(20_000) < 0.5
        answers = np.where(members, rng.random(20_000) < p, rng.random(20_000) < 1 - p).astype(float)
        found = audit(answers, members, delta=0.0, rng=rng)
        assert found.epsilon_lower <= epsilon
        assert found.epsilon_lower > 0.7 * epsilon, "with 10,000 examples per half the bound is nearly tight"


def test_the_auc_interval_covers_the_analytic_auc_and_counts_low_fpr_positives():
    from attacker.membership.metrics import membership_metrics

    rng = np.random.default_rng(3)
    members = np.arange(2000) < 1000
    m = membership_metrics(rng.normal(members * 0.5, 1), members)
    assert m.auc_low < norm.cdf(0.5 / math.sqrt(2)) < m.auc_high and m.auc_high - m.auc_low < 0.06
    assert m.tp_at_01pct_fpr == round(m.tpr_at_01pct_fpr * 1000)


def test_logit_confidence_does_not_saturate_when_float32_rounds_p_to_one():
    posteriors = np.array([[1.0, 1e-12, 1e-20], [1.0, 1e-9, 0.0]], dtype=np.float32)
    phi = logit_confidence(posteriors, np.array([0, 0]))
    np.testing.assert_allclose(phi, [-math.log(1e-12 + 1e-20), -math.log(1e-9)], rtol=1e-5)
    assert phi[0] > phi[1], "a more confident answer keeps a larger φ"


def test_scores_keep_their_order_far_into_the_tails():
    from attacker.membership.likelihood import unit

    z = np.array([0.0, 9.0, 40.0, 1e4])
    assert norm.cdf(z[1]) == norm.cdf(z[2]) == 1.0, "Φ ties them in float64"
    s = unit(z)
    assert s[0] == 0.5 and np.all(np.diff(s) > 0) and np.all(s < 1)
