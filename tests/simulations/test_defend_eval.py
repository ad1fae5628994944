"""``archleak defend-eval`` end to end on a tiny federation, and the CLI's refusals."""

import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defenses.accounting import epsilon
from fednas.storage import read_jsonl
from simulations.cli import app

runner = CliRunner()


def test_defend_eval_writes_the_table_with_deltas_epsilon_and_plot(tmp_path, data_root, mnist_or_digits):
    out = tmp_path / "eval"
    config = [f"dataset='{mnist_or_digits}'", f"data-root='{data_root}'", "theta-steps=1", "eval-samples=32",
              "channels=4", "nodes=2", "samples-per-client=64", "attack-iterations=5", "attack-aux-samples=200",
              "attacks='adra'"]
    amia = ["shadow-size=40", "shadow-epochs=1", "attack-epochs=2", "eval-size=20"]
    result = runner.invoke(app, ["defend-eval", "--cases", "none,dp-sgd-alpha-paper,md (DMP student)", "--rounds", "2",
                                 "--out", str(out), *[a for c in config for a in ("--run-config", c)],
                                 *[a for c in amia for a in ("--amia-set", c)], "--distill-set", "epochs=1",
                                 "--distill-set", "keep-fraction=0.02"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "defenses.csv").open()))
    assert [r["defense"] for r in rows] == ["none", "dp-sgd-alpha-paper", "md (DMP student)"]
    for row in rows:
        assert 0 <= float(row["amia_auc"]) <= 1 and 0 <= float(row["amia_theta_auc"]) <= 1
    assert float(rows[0]["d_amia_auc"]) == 0.0
    md = json.loads((out / "defend-eval.json").read_text())["results"][2]
    assert md["run_dir"] == json.loads((out / "defend-eval.json").read_text())["results"][0]["run_dir"]
    assert md["model"] == "student" and md["distill"]["kept"] > 0  # the undefended run's DMP student is attacked
    assert rows[0]["epsilon"] == "" and float(rows[1]["epsilon"]) > 0
    assert float(rows[0]["d_test_accuracy"]) == 0.0 and rows[1]["recognised"] != ""
    assert (out / "privacy-utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "defend-eval.json").read_text())
    assert report["results"][1]["config"]["defenses"] == "dp-sgd-alpha-paper" and "torch" in report["versions"]
    assert "| dp-sgd-alpha-paper |" in (out / "defenses.md").read_text()
    assert "TLS" not in (out / "defenses.md").read_text(), "no line about a case this run did not measure"
    assert "AMIA (ml-leaks, 1 fixed shadow(s))" in (out / "defenses.md").read_text()   # from the run's settings
    # the DP run: ε per client every round, composed across rounds, and in the summary
    run_dir = Path(report["results"][1]["run_dir"])
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    per_round = [r["privacy"]["epsilon"] for r in rounds]
    assert set(per_round[0]) == {"partition-0", "partition-1"}
    for client in per_round[0]:
        assert 0 < per_round[0][client] < per_round[1][client] < math.inf
    n = rounds[0]["client_metrics"]["alpha-samples"]      # equal partitions: every client holds n D^α samples
    batch = report["results"][1]["config"].get("alpha-batch-size", 1)
    expected = epsilon([(0.1, batch / n, int(rounds[0]["client_metrics"]["alpha-steps"]))] * 2, 1 / n)
    assert per_round[1]["partition-0"] == pytest.approx(expected, rel=1e-9)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["privacy"]["max_epsilon"] == pytest.approx(max(per_round[1].values()))
    assert float(rows[1]["epsilon"]) == pytest.approx(summary["privacy"]["max_epsilon"])


def test_defend_eval_rejects_unknown_cases():
    result = runner.invoke(app, ["defend-eval", "--cases", "none,magic"])
    assert result.exit_code != 0 and "unknown case 'magic'" in result.output
