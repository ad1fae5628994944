"""Per-client label histograms: the estimate from recovered labels against the truth of each client's partition,
under IID and Dirichlet partitions, beside the uniform prior and the population."""

import json
import shutil

import numpy as np
import pytest

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.interceptor import Interceptor
from attacker.scoring.label_leakage import estimate, label_leakage, total_variation
from fednas.partition import split_federation
from fednas.run_folder import RunFolder

K = 10


def test_total_variation_on_hand_computed_histograms():
    assert total_variation(np.array([1, 0]), np.array([0, 1])) == 1.0
    assert total_variation(np.array([2, 2]), np.array([1, 1])) == 0.0
    assert total_variation(np.array([3, 1, 0]), np.array([1, 1, 2])) == pytest.approx(0.5)


def test_few_labels_stay_near_the_population_and_many_speak_for_themselves():
    population = np.full(K, 100)
    two = estimate(np.eye(K, dtype=int)[3] * 2, population)
    assert two[3] == pytest.approx((2 + 1) / (2 + K)) and two.sum() == pytest.approx(1)
    many = estimate(np.eye(K, dtype=int)[3] * 10_000, population)
    assert many[3] > 0.99


def lines_from(split, labels, rng, per_client, noise):
    """Metrics lines as the interceptor writes them: one ADRA capture per client, recovered labels drawn from the
    client's D^α, each replaced by a uniformly random label with probability ``noise``."""
    out = []
    for node, client in enumerate(split.clients):
        drawn = labels[rng.choice(client.alpha, per_client)]
        wrong = rng.random(per_client) < noise
        drawn[wrong] = rng.integers(0, K, int(wrong.sum()))
        out.append({"node_id": node, "attack": "adra", "images": [{"label": int(c)} for c in drawn]})
    return out


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_recovered_labels_beat_both_baselines_and_noise_does_not(scheme):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, K, 20_000)
    split = split_federation(labels, 8, scheme=scheme, concentration=0.3, seed=1)
    truth = {n: {"partition": n, "alpha": np.bincount(labels[c.alpha], minlength=K),
                 "theta": np.bincount(labels[c.theta], minlength=K)} for n, c in enumerate(split.clients)}
    population = np.bincount(labels[split.population], minlength=K)
    good = label_leakage(lines_from(split, labels, rng, 400, 0.0), truth, population, K)["mean"]["alpha"]
    noise = label_leakage(lines_from(split, labels, rng, 400, 1.0), truth, population, K)["mean"]["alpha"]
    assert good["clients"] == 8 and good["tv"] < 0.1
    assert good["tv"] < good["tv_population"] or scheme == "iid" and good["tv"] < 0.1
    if scheme == "dirichlet":       # a skewed client is far from the population; labels alone reveal it
        assert good["tv_population"] > 0.3 and good["tv"] < good["tv_population"] / 3
        assert noise["tv"] > good["tv_population"] * 0.8, "random labels carry no information about the client"
    else:                           # IID: the population is already close, and noise stays near it
        assert good["tv_population"] < 0.1 and noise["tv"] < 0.15


def test_the_interceptor_reports_each_clients_histogram_against_its_partition(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("reconstructions"))
    settings = RunFolder(run).section(InterceptorConfig).model_copy(update={
        "attacks": "adra", "attack_iterations": 2, "attack_prior": "pixel", "attack_aux_samples": 100})
    interceptor = Interceptor(run, settings, log=lambda line: None)
    interceptor.process(interceptor.pending())
    report = interceptor.report()
    leak = json.loads((interceptor.out / "summary.json").read_text())["label_leakage"]
    rows = [r for r in leak["rows"] if r["kind"] == "alpha"]
    assert sorted(r["partition"] for r in rows) == [0, 1]
    for r in rows:
        assert sum(r["counts"]) == r["labels"] > 0 and len(r["true"]) == K
        assert 0 <= r["tv"] <= 1 and 0 <= r["tv_population"] <= 1
        assert (interceptor.out / f"labels-n{r['node']}-alpha.png").read_bytes()[:4] == b"\x89PNG"
    assert "label histograms of D^α (2 client(s)" in report
    page = (interceptor.out / "index.html").read_text()
    assert "Per-client label histograms" in page and f"labels-n{rows[0]['node']}-alpha.png" in page
