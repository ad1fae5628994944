"""``archleak defend-eval`` end to end on a tiny federation, and the CLI's refusals."""

import csv
import json

from typer.testing import CliRunner

from simulations.cli import app

runner = CliRunner()


def test_defend_eval_writes_the_table_with_deltas_epsilon_and_plot(tmp_path, data_root, mnist_or_digits):
    out = tmp_path / "eval"
    config = [f"dataset='{mnist_or_digits}'", f"data-root='{data_root}'", "theta-steps=1", "eval-samples=32",
              "channels=4", "nodes=2", "samples-per-client=64", "attack-iterations=5", "attack-aux-samples=200"]
    result = runner.invoke(app, ["defend-eval", "--cases", "none,dp-sgd-alpha-paper", "--rounds", "1",
                                 "--out", str(out), *[a for c in config for a in ("--run-config", c)]])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "defenses.csv").open()))
    assert [r["defense"] for r in rows] == ["none", "dp-sgd-alpha-paper"]
    assert rows[0]["epsilon"] == "" and float(rows[1]["epsilon"]) > 0
    assert float(rows[0]["d_test_accuracy"]) == 0.0 and rows[1]["recognised"] != ""
    assert (out / "privacy-utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "defend-eval.json").read_text())
    assert report["results"][1]["config"]["defenses"] == "dp-sgd-alpha-paper" and "torch" in report["versions"]
    assert "| dp-sgd-alpha-paper |" in (out / "defenses.md").read_text()


def test_defend_eval_rejects_unknown_cases():
    result = runner.invoke(app, ["defend-eval", "--cases", "none,magic"])
    assert result.exit_code != 0 and "unknown case 'magic'" in result.output
