"""ε for DP-SGD on α: a hand-checked value and composition across rounds (the numbers of a real run are checked
in tests/simulations/test_defend_eval.py)."""

import itertools
import math

import pytest

from defenses.accounting import PrivacyLedger, epsilon

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))   # Opacus' default RDP orders


def gaussian_epsilon_by_hand(sigma: float, steps: int, delta: float) -> float:
    """Without subsampling (q = 1) the Gaussian mechanism's RDP is exactly α/(2σ²) per step; RDP composes by
    addition; the conversion to (ε, δ) is Balle et al. 2020's, minimised over the orders."""
    best = math.inf
    for a in ORDERS:
        rdp = steps * a / (2 * sigma**2)
        eps = rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return best


def test_epsilon_matches_the_gaussian_mechanism_computed_by_hand():
    for sigma, steps in ((1.0, 1), (2.0, 10), (5.0, 100)):
        assert epsilon([(sigma, 1.0, steps)], 1e-5) == pytest.approx(gaussian_epsilon_by_hand(sigma, steps, 1e-5),
                                                                     rel=1e-6)


def test_epsilon_composes_across_rounds_and_grows():
    ledger = PrivacyLedger()
    seen = []
    for _ in range(4):
        ledger.record("partition-0", 1.1, 0.02, 25, 1e-3)
        seen.append(ledger.epsilons()["partition-0"])
    assert all(b > a for a, b in itertools.pairwise(seen))
    # four rounds of 25 steps are the same mechanism as 100 steps at once: composition, not a restart
    assert seen[-1] == pytest.approx(epsilon([(1.1, 0.02, 100)], 1e-3), rel=1e-9)
    assert seen[-1] < 4 * seen[0]        # RDP composes better than the linear bound of basic composition


def test_no_noise_means_no_guarantee_and_no_steps_mean_no_cost():
    assert epsilon([(0.0, 0.1, 5)], 1e-5) == math.inf
    assert epsilon([], 1e-5) == 0.0 and epsilon([(1.0, 0.1, 0)], 1e-5) == 0.0
    rdp, prv = epsilon([(1.0, 0.1, 50)], 1e-5), epsilon([(1.0, 0.1, 50)], 1e-5, "prv")
    assert 0.5 * rdp < prv <= rdp        # PRV accounting is tighter than RDP's conversion
