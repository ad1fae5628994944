"""Smoke tests of every ``archleak`` command (the flwr-run path has its own test)."""

import json
import re

import pytest
from typer.testing import CliRunner

from simulations.cli import app
from tests.conftest import flat

runner = CliRunner()


def test_info_reports_versions_root_and_datasets(data_root):
    result = runner.invoke(app, ["info", "--json", "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["data_root"] == str(data_root) and report["data_root_source"] == "run-config"
    assert report["datasets"]["digits"]["present"] and "flwr" in report["versions"]


def test_config_markdown_lists_every_section():
    result = runner.invoke(app, ["config", "--markdown"])
    assert result.exit_code == 0
    assert "`num-server-rounds`" in result.output and "`threat-model`" in result.output


def test_reconstruct_attacks_stored_captures_offline(tiny_run):
    run = tiny_run
    assert not (run / "reconstructions" / "wire" / "metrics.jsonl").exists(), "capture mode must not attack"
    result = runner.invoke(app, ["reconstruct", str(run / "captures"), "--no-progress", "--threat-model",
                                 "architecture-only", "--set", "attack-iterations=2", "--set", "attack-prior=pixel",
                                 "--set", "attack-restarts=1"])
    assert result.exit_code == 0, result.output
    assert "2 capture(s) to attack under the architecture-only threat model" in result.output
    assert "SR (identified)" in result.output
    assert (run / "reconstructions" / "architecture-only" / "index.html").exists()
    # the α-only attacker sees no weights: the θ and joint attacks say so instead of guessing
    assert "theta: not applicable to 2 capture(s)" in result.output and "joint: not applicable" in result.output
    for line in result.output.splitlines():     # a capture's line names that capture only, not its batch's first
        if "not applicable:" in line:
            assert len(set(re.findall(r"\d+-r\d{4}-n\d+", line))) == 1, line
    again = runner.invoke(app, ["reconstruct", str(run), "--no-progress", "--threat-model", "architecture-only"])
    assert "0 capture(s) to attack" in again.output     # done captures are not attacked twice


def test_reconstruct_rejects_a_non_run_folder(tmp_path):
    result = runner.invoke(app, ["reconstruct", str(tmp_path)])
    assert result.exit_code != 0 and "not a run folder" in flat(result.output)


@pytest.mark.parametrize(("content", "message"), [("{not json", "is not valid JSON"),
                                                  ('{"dataset": "mnist"}', 'has no "config" object'),
                                                  ('{"config": {"num-server-rounds": -1}}', "num-server-rounds")])
def test_a_damaged_config_json_is_a_one_line_usage_error(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    result = runner.invoke(app, ["reconstruct", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and message in flat(result.output)
    assert "Traceback" not in result.output


def test_crash_output_never_shows_local_variables():
    assert app.pretty_exceptions_show_locals is False


def test_bench_adra_smoke(tmp_path, data_root, mnist_or_digits):
    if mnist_or_digits != "mnist":
        pytest.skip("bench adra is defined on MNIST test images, and MNIST is not under the data root")
    out = tmp_path / "adra.json"
    result = runner.invoke(app, ["bench", "adra", "--threat", "wire", "--images", "1", "--data-root", str(data_root),
                                 "--attack", "adra,theta,joint", "--set", "attack-iterations=2",
                                 "--set", "attack-restarts=1", "--set", "inversion-iterations=2",
                                 "--set", "attack-prior=pixel", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    cases = figures["cases"]
    assert set(figures["paper_definitions"]) == {"sr", "mse"}, "a paper number comes with the paper's definitions"
    assert [c["method"] for c in cases] == ["adra", "theta", "joint"]
    assert "[3/3] wire joint B=1" in result.output        # a progress line per attacked case
    for case in cases:
        assert case["threat"] == "wire" and case["images"] == 1 and "recognised" in case["label_only_baseline"]


def test_bench_adra_rejects_bad_settings(data_root):
    result = runner.invoke(app, ["bench", "adra", "--set", "attack-objective=l1", "--data-root", str(data_root)])
    assert result.exit_code != 0 and "l2, cosine, whitened-l2" in flat(result.output)


def test_bench_interceptor_rejects_unknown_modes():
    result = runner.invoke(app, ["bench", "interceptor", "--modes", "off,sniff"])
    assert result.exit_code != 0 and "off, capture, live, after-run" in flat(result.output)


def test_bench_defenses_smoke(tmp_path, data_root, mnist_or_digits):
    out = tmp_path / "defenses.json"
    config = [f"dataset='{mnist_or_digits}'", f"data-root='{data_root}'", "theta-steps=1", "alpha-steps=2",
              "channels=4", "nodes=2", "samples-per-client=64"]
    result = runner.invoke(app, ["bench", "defenses", "--cases", "dp-sgd-alpha", "--repeats", "1", "--json", str(out),
                                 *[a for c in config for a in ("--run-config", c)]])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"none", "dp-sgd-alpha"} and rows["none"]["ratio"] == 1.0
    assert rows["dp-sgd-alpha"]["alpha_steps"] == 2 and rows["dp-sgd-alpha"]["round_s"] > 0


def test_bench_race_and_similarity_smoke(tmp_path, data_root, mnist_or_digits):
    if mnist_or_digits != "mnist":
        pytest.skip("bench race and bench similarity are defined on MNIST test images, and MNIST is not under the "
                    "data root")
    out = tmp_path / "race.json"
    result = runner.invoke(app, ["bench", "race", "--images", "1", "--wall-cap", "0.5", "--starts", "class-mean",
                                 "--data-root", str(data_root), "--contestants", "ours,invertinggradients",
                                 "--run-config", "channels=4", "--run-config", "nodes=2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    race = figures["starts"]["class-mean"]
    assert figures["images"] == 1 and race["contestants"]["ours"]["label_accuracy"] == 1.0
    assert (tmp_path / "race.png").read_bytes()[:4] == b"\x89PNG"
    rival = race["contestants"]["invertinggradients"]      # breaching is an optional extra
    assert "best_psnr" in rival or "pip install" in rival["skipped"]
    assert race["verdict"]
    result = runner.invoke(app, ["bench", "similarity", "--per-class", "2", "--train-steps", "0", "--alpha-size", "224",
                                 "--data-root", str(data_root), "--json", str(tmp_path / "sim.json")])
    assert result.exit_code == 0, result.output
    case = json.loads((tmp_path / "sim.json").read_text())["cases"][0]
    assert case["alpha_entries"] == 224 and -1 <= case["alpha"]["same_class_mean"] <= 1
    bad = runner.invoke(app, ["bench", "race", "--contestants", "dlg2", "--data-root", str(data_root)])
    assert bad.exit_code != 0 and "dlg2" in flat(bad.output)
    bad = runner.invoke(app, ["bench", "race", "--starts", "zeros", "--data-root", str(data_root)])
    assert bad.exit_code != 0 and "noise, class-mean" in flat(bad.output)


def test_bench_search_and_inversion_smoke(tmp_path, data_root, mnist_or_digits):
    """Both paired benchmarks print their paths' medians, and the two inversion paths agree on the gradient."""
    if mnist_or_digits != "mnist":
        pytest.skip("bench search and bench inversion are defined on MNIST, and MNIST is not under the data root")
    small = [a for c in ("channels=4", "nodes=2") for a in ("--run-config", c)]
    result = runner.invoke(app, ["bench", "search", "--rounds", "1", "--steps", "1", "--data-root", str(data_root),
                                 "--json", str(tmp_path / "search.json"), *small])
    assert result.exit_code == 0, result.output
    search = json.loads((tmp_path / "search.json").read_text())
    assert search["step_plain_ms"] > 0 and search["step_fast_ms"] > 0
    result = runner.invoke(app, ["bench", "inversion", "--rows", "2", "--rounds", "1", "--data-root", str(data_root),
                                 "--json", str(tmp_path / "inversion.json"), *small])
    assert result.exit_code == 0, result.output
    case = json.loads((tmp_path / "inversion.json").read_text())["cases"][0]
    assert case["rows"] == 2 and case["fast_s_per_evaluation"] > 0 and case["plain_s_per_evaluation"] > 0
    assert case["max_gradient_difference"] < 1e-4
    bad = runner.invoke(app, ["bench", "inversion", "--rows", "0", "--data-root", str(data_root)])
    assert bad.exit_code != 0 and "rows must be positive" in flat(bad.output)


def test_bench_methods_smoke(tmp_path, data_root):
    """Two methods at a tiny budget: each trained, its accuracy with an interval, the gap to DARTS."""
    tiny = [a for c in ("dataset='digits'", "num-server-rounds=1", "samples-per-client=60", "theta-epochs=0",
                        "theta-steps=1", "theta-batch-size=8", "alpha-epochs=0", "alpha-steps=1", "alpha-batch-size=4",
                        "channels=4", "nodes=2",
                        "eval-samples=50", "enas-hidden=8") for a in ("--run-config", c)]
    result = runner.invoke(app, ["bench", "methods", "--methods", "darts,enas", "--out", str(tmp_path / "runs"),
                                 "--json", str(tmp_path / "m.json"), "--data-root", str(data_root), *tiny])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "m.json").read_text())
    assert set(figures["methods"]) == {"darts", "enas"} and figures["methods"]["darts"]["points_below_darts"] == 0
    enas = figures["methods"]["enas"]
    assert enas["n_test"] == 50 and enas["ci95"][0] <= enas["test_accuracy"] <= enas["ci95"][1]
    assert enas["clients_by_round"] == [2] and "normal:" in enas["genotype"] and figures["commit"]
    result = runner.invoke(app, ["bench", "methods", "--methods", "darts,nsga"])
    assert result.exit_code != 0 and "known: darts, pdarts, enas, smash" in flat(result.output)
