"""Every search method through the Flower app with the eavesdropper after the run: what it captured, which attacks
applied, and, for the others, the reason the report gives (issue 19)."""

import json

import pytest

from fednas.run_folder import RunFolder
from fednas.storage import read_jsonl
from simulations.simulate import simulate

QUICK = {"attacks": "adra,theta", "attack-iterations": 2, "attack-restarts": 1, "attack-prior": "pixel",
         "attack-aux-samples": 100, "inversion-iterations": 2, "interceptor": "after-run"}


def run_method(method, data_root, out, **kw):
    cfg = {"dataset": "digits", "data-root": str(data_root), "output-dir": str(out), "num-server-rounds": 2,
           "theta-steps": 1, "theta-batch-size": 4, "alpha-steps": 1, "alpha-batch-size": 1, "eval-samples": 32,
           "channels": 4, "nodes": 2, "samples-per-client": 60, "search-method": method, "smash-candidates": 2,
           "smash-rank-samples": 8, "enas-hidden": 8, **QUICK, **kw}
    run = simulate(cfg)
    summary = json.loads((RunFolder(run).reconstructions("wire") / "summary.json").read_text())
    return run, summary


def test_pdarts_alpha_and_theta_are_attacked_in_every_stage(data_root, tmp_path):
    run, summary = run_method("pdarts", data_root, tmp_path, **{"pdarts-keep": "5", "pdarts-skip-dropout": "0,0"})
    assert summary["search_method"]["attacks"] == {"adra": "applies", "theta": "applies", "joint": "applies"}
    lines = read_jsonl(RunFolder(run).reconstructions("wire") / "metrics.jsonl")
    assert len({(r["capture_id"], r["attack"]) for r in lines}) == 2 * 2 * 2   # rounds x clients x attacks
    assert not [r for r in lines if r.get("error")], "the second stage's deeper supernet must be attacked too"
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["client_metrics"]["pdarts-stage"] for r in rounds] == [0.0, 1.0]


@pytest.mark.parametrize(("method", "adra_why", "theta_why"), [
    ("enas", "ENAS clients take no α step", "samples on the client"),
    ("smash", "SMASH clients take no α step", "generated per sampled architecture"),
])
def test_methods_without_an_alpha_step_say_why_each_attack_does_not_apply(method, adra_why, theta_why, data_root,
                                                                         tmp_path):
    """Round 1 searches (nothing of the update is inverted); round 2 trains the adopted cell alone
    (child-train-share = 0.5 of 2 rounds), whose encoding is the α on the wire: Δθ inversion applies there, ADRA
    still not."""
    run, summary = run_method(method, data_root, tmp_path)
    report = summary["search_method"]
    assert report["name"] == method and report["d_alpha"]
    assert adra_why in report["attacks"]["adra"] and theta_why in report["attacks"]["theta"]
    assert report["child_rounds"] == [2] and report["attacks_in_child_rounds"]["theta"] == "applies"
    assert adra_why in report["attacks_in_child_rounds"]["adra"]
    assert summary["wire"]["with_update"] == 4
    adra, theta = summary["by_attack"]["adra"], summary["by_attack"]["theta"]
    assert adra["not_applicable"] == 4 and adra_why in adra["why_not"]
    assert theta["not_applicable"] == 2 and theta_why in theta["why_not"]
    lines = read_jsonl(RunFolder(run).reconstructions("wire") / "metrics.jsonl")
    inverted = [r for r in lines if r["attack"] == "theta" and not r.get("error")]
    assert sorted(r["server_round"] for r in inverted) == [2, 2], "Δθ of the child-training round is inverted"
    rounds = read_jsonl(run / "rounds.jsonl")
    assert len(rounds) == 2 and rounds[-1]["genotype"]["normal"]["edges"]
