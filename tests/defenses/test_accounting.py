"""ε for DP-SGD on α: a hand-checked value, composition across rounds, and the numbers in a real run."""

import itertools
import json
import math

import pytest

from defenses.accounting import PrivacyLedger, epsilon
from fednas.storage import read_jsonl
from simulations.simulate import simulate
from tests.fednas.test_e2e_simulation import tiny

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


def test_a_dp_run_writes_epsilon_every_round_and_in_the_summary(tmp_path, data_root, mnist_or_digits):
    overrides = tiny(mnist_or_digits, data_root, tmp_path / "runs", **{
        "defenses": "dp-sgd-alpha,l2-alpha", "dp-noise-multiplier": 1.5, "alpha-steps": 3,
        "alpha-batch-size": 2})
    run_dir = simulate(overrides)
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    per_round = [r["privacy"]["epsilon"] for r in rounds]
    assert set(per_round[0]) == {"partition-0", "partition-1"}
    for client in per_round[0]:
        assert 0 < per_round[0][client] < per_round[1][client] < math.inf
    n = rounds[0]["client_metrics"]["alpha-samples"]     # equal partitions: every client holds n D^α samples
    expected = epsilon([(1.5, 2 / n, 3)] * 2, 1 / n)
    assert per_round[1]["partition-0"] == pytest.approx(expected, rel=1e-9)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["privacy"]["max_epsilon"] == pytest.approx(max(per_round[1].values()))
