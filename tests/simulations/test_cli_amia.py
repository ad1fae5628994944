"""Smoke tests of ``archleak amia``, ``serve``, ``amia-scenario`` and ``bench amia`` on one tiny finished search."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from simulations.cli import app
from tests.conftest import flat

runner = CliRunner()
FAST = ["--no-progress", "--set", "shadow-size=40", "--set", "shadow-epochs=1", "--set", "attack-epochs=2",
        "--set", "eval-size=20"]


@pytest.fixture
def run(tiny_run):
    return tiny_run


def test_amia_writes_tables_roc_scores_and_config(run, tmp_path):
    result = runner.invoke(app, ["amia", "--run", str(run), "--out", str(tmp_path / "a"), *FAST])
    assert result.exit_code == 0, result.output
    assert "D^α (architecture data)" in result.output and "D^θ (weights' data, reference)" in result.output
    record = json.loads((tmp_path / "a" / "amia.json").read_text())
    assert {r["members"] for r in record["rows"]} == {"alpha", "alpha-used", "theta"}
    assert record["config"]["shadow-size"] == 40 and record["seed"] == 0 and "torch" in record["versions"]
    assert set(record["seconds"]) == {"target", "shadows", "attack_model", "evaluation"}
    with np.load(tmp_path / "a" / "scores.npz", allow_pickle=False) as z:
        assert z["alpha_member"].sum() == len(z["alpha_member"]) // 2 == 20
    assert (tmp_path / "a" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "a" / "amia.csv").read_text().startswith("members,n,accuracy,advantage")


def test_amia_through_the_http_service_scores_the_same(run, tmp_path):
    runner.invoke(app, ["amia", "--run", str(run), "--out", str(tmp_path / "local"), "--members", "alpha", *FAST])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "simulations.cli", "serve", str(run), "--port", "0"],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        result = runner.invoke(app, ["amia", "--run", str(run), "--url", url.group(0), "--out", str(tmp_path / "http"),
                                     "--members", "alpha", *FAST])
        assert result.exit_code == 0, result.output
    finally:
        server.terminate()
        server.wait(timeout=30)
    with np.load(tmp_path / "local" / "scores.npz") as a, np.load(tmp_path / "http" / "scores.npz") as b:
        np.testing.assert_array_equal(a["alpha_score"], b["alpha_score"])


@pytest.mark.parametrize(("args", "message"), [
    (["--eta", "1.5"], "0 < eta <= 1"),
    (["--shadow", "resnet"], "known: fixed, searchable"),
    (["--members", "weights"], "unknown member kind"),
])
def test_amia_rejects_bad_input(run, args, message):
    result = runner.invoke(app, ["amia", "--run", str(run), *args, *FAST])
    assert result.exit_code != 0 and message in flat(result.output)


def test_amia_rejects_a_folder_without_a_model(tmp_path):
    result = runner.invoke(app, ["amia", "--run", str(tmp_path), "--no-progress"])
    assert result.exit_code != 0 and "not a run folder" in flat(result.output)


def test_amia_scenario_table5_and_bench(run, tmp_path):
    result = runner.invoke(app, ["amia-scenario", "table5", "--run", str(run), "--out", str(tmp_path / "t5"),
                                 "--set", "eta-dataset=digits", *FAST])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "t5" / "table5.json").read_text())["rows"]
    assert [r["column"] for r in rows] == ["η=1", "η=0.75", "η=0.5", "η=0.25"]
    assert (tmp_path / "t5" / "eta0.25" / "amia.md").exists()
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "amia", "--run", str(run), "--shadow", "fixed", "--json", str(out),
                                 *FAST[1:]])
    assert result.exit_code == 0, result.output
    case = json.loads(out.read_text())["cases"][0]
    assert case["shadow"] == "fixed" and 0 <= case["alpha"]["auc"] <= 1 and case["seconds"]["evaluation"] > 0


def test_an_unexpected_failure_is_one_line_without_a_traceback(run, tmp_path, capsys, monkeypatch):
    import socket

    from simulations.cli import main

    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.delenv("ARCHLEAK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["amia", "--run", str(run), "--url", url, "--out", str(tmp_path / "a"), *FAST])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1
    assert re.fullmatch(rf"archleak: error: ServiceError: prediction service {re.escape(url)} is unreachable: .+ "
                        r"\(ARCHLEAK_DEBUG=1 shows the traceback\)", err), err
    monkeypatch.setenv("ARCHLEAK_DEBUG", "1")
    with pytest.raises(Exception, match="is unreachable"):
        main(["amia", "--run", str(run), "--url", url, "--out", str(tmp_path / "b"), *FAST])


@pytest.mark.parametrize("attack", ["lira", "lira-online", "rmia"])
def test_reference_attacks_run_from_the_cli_and_share_cached_references(run, tmp_path, attack):
    refs = ["--set", "references=2", "--set", "population=40"]
    result = runner.invoke(app, ["amia", "--run", str(run), "--attack", attack, "--out", str(tmp_path / attack),
                                 "--members", "alpha", *FAST, *refs])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / attack / "amia.json").read_text())
    assert record["config"]["attack"] == attack and record["rows"][0]["n"] == 20
    assert 0 <= record["rows"][0]["auc"] <= 1 and "tp@0.1%fpr" in record["rows"][0]
    assert f"Attack: {attack} with 2 fixed reference model(s)" in (tmp_path / attack / "amia.md").read_text()
    again = runner.invoke(app, ["amia", "--run", str(run), "--attack", attack, "--out", str(tmp_path / "again"),
                                "--members", "alpha", *FAST, *refs])
    assert "from the cache" in again.output, "the references are trained once per configuration"
    with np.load(tmp_path / attack / "scores.npz") as a, np.load(tmp_path / "again" / "scores.npz") as b:
        np.testing.assert_array_equal(a["alpha_score"], b["alpha_score"])


def test_several_attacks_are_compared_side_by_side_on_the_same_members(run, tmp_path):
    """--attack ml-leaks,rmia: one column group per attack in amia.md/.csv/.json, every curve in one roc.png, each
    attack's full report in its sub-folder, and the same members and non-members for both."""
    out = tmp_path / "both"
    result = runner.invoke(app, ["amia", "--run", str(run), "--attack", "ml-leaks,rmia", "--out", str(out),
                                 "--members", "alpha,theta", "--set", "references=2", "--set", "population=40", *FAST])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "amia.json").read_text())
    assert record["attacks"] == ["ml-leaks", "rmia"] and [r["members"] for r in record["rows"]] == ["alpha", "theta"]
    for name in ("ml-leaks", "rmia"):
        own = json.loads((out / name / "amia.json").read_text())
        assert own["config"]["attack"] == name
        assert [r["auc"] for r in own["rows"]] == [r[f"{name}:auc"] for r in record["rows"]]
    with np.load(out / "ml-leaks" / "scores.npz") as a, np.load(out / "rmia" / "scores.npz") as b:
        np.testing.assert_array_equal(a["alpha_member"], b["alpha_member"])
        np.testing.assert_array_equal(a["alpha_ids"], b["alpha_ids"])
    header = (out / "amia.csv").read_text().splitlines()[0]
    assert "ml-leaks:auc" in header and "rmia:tp@0.1%fpr" in header
    text = (out / "amia.md").read_text()
    assert "rmia: AUC [95% CI]" in text and "ml-leaks: TPR@1% / TPR@0.1% (TP)" in text
    few = [(a, r["members"]) for r in record["rows"] for a in ("ml-leaks", "rmia") if r[f"{a}:tp@0.1%fpr"] < 10]
    assert few and text.count("too few to trust") == len(few), "a rate from fewer than 10 positives says so"
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unknown_attack_lists_the_known_ones(run):
    result = runner.invoke(app, ["amia", "--run", str(run), "--attack", "mystery", *FAST])
    assert result.exit_code == 2 and "known: ml-leaks, lira, lira-online, rmia" in flat(result.output)


def test_amia_calibrate_runs_every_attack_on_an_overfitted_target(data_root, mnist_or_digits, tmp_path):
    # the bundled digits (the fallback without MNIST) fit slower: after 10 epochs the target is at chance on its 40
    # members (0.10; 0.175 on the held-out images), after 40 it overfits them (0.925 against 0.525)
    epochs = "10" if mnist_or_digits == "mnist" else "40"
    result = runner.invoke(app, ["amia-calibrate", "--dataset", mnist_or_digits, "--data-root", str(data_root),
                                 "--members", "40", "--pool", "120", "--target-epochs", epochs, "--references", "2",
                                 "--out", str(tmp_path / "cal"), "--set", "shadow-size=30", "--set",
                                 "shadow-epochs=1", "--set", "attack-epochs=2", "--set", "population=40"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert [r["attack"] for r in record["rows"]] == ["ml-leaks", "lira", "lira-online", "rmia"]
    assert record["train_accuracy"] > record["test_accuracy"], "the calibration target overfits"
    for row in record["rows"]:
        assert row["auc_low"] <= row["auc"] <= row["auc_high"] and row["n_members"] == 40
    assert (tmp_path / "cal" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "cal" / "calibration.md").read_text()
    assert "Measured order at 0.1% FPR" in text
    assert text.count("too few to trust") == sum(r["tp_at_01pct_fpr"] < 10 for r in record["rows"]) > 0


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, data_root, mnist_or_digits):
    """A tiny search whose clients ran DP-SGD on α (an accountant in rounds.jsonl)."""
    from simulations.simulate import simulate
    from tests.conftest import TINY_RUN

    return simulate({"dataset": mnist_or_digits, "data-root": str(data_root), **TINY_RUN, "num-server-rounds": 2,
                     "defenses": "dp-sgd-alpha", "interceptor": "off",
                     "output-dir": str(tmp_path_factory.mktemp("dp-runs"))})


def test_the_dp_audit_stays_below_the_accountants_epsilon(dp_run, tmp_path):
    result = runner.invoke(app, ["amia", "--run", str(dp_run), "--out", str(tmp_path / "a"), "--members", "alpha",
                                 *FAST])
    assert result.exit_code == 0, result.output
    audit = json.loads((tmp_path / "a" / "amia.json").read_text())["audit"]
    assert audit["accountant_epsilon"] > 0 and 0 <= audit["epsilon_lower"] <= audit["accountant_epsilon"]
    assert audit["tp"] + audit["fn"] + audit["fp"] + audit["tn"] == 20      # the held-out half of 40 candidates
    assert not audit["exceeds_accountant"] and "BUG" not in (tmp_path / "a" / "amia.md").read_text()
    assert "DP audit (D^α members" in (tmp_path / "a" / "amia.md").read_text()
