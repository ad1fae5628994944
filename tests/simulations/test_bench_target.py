"""``archleak bench target``: the README's trained targets as one timed federation each."""

import json
import re

from typer.testing import CliRunner

from simulations.bench_target import RECIPES, recipe_text
from simulations.cli import app
from tests.conftest import REPO, flat

runner = CliRunner()


def test_the_readme_gives_exactly_the_recipes_the_bench_times():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r'--run-config "([^"]*eval-samples=0)"', readme)
    assert sorted(commands) == sorted(recipe_text(name) for name in RECIPES.names())


def test_bench_target_smoke_times_a_tiny_federation_with_its_accuracy_interval(tmp_path, data_root,
                                                                                mnist_or_digits):
    tiny = {"num-server-rounds": 2, "dataset": f"'{mnist_or_digits}'", "samples-per-client": 64, "channels": 4,
            "nodes": 2, "theta-batch-size": 16, "alpha-steps": 2, "eval-samples": 200,
            "output-dir": f"'{tmp_path / 'runs'}'"}
    result = runner.invoke(app, ["bench", "target", "--clients", "2", "--engine", "in-process", "--data-root",
                                 str(data_root), "--json", str(tmp_path / "target.json"),
                                 *[a for k, v in tiny.items() for a in ("--run-config", f"{k}={v}")]])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "target.json").read_text())
    assert figures["recipe"] == "mnist" and figures["clients"] == 2 and figures["test_n"] == 200
    assert len(figures["test_accuracy_by_round"]) == len(figures["round_seconds"]) == 2
    low, high = figures["final_test_accuracy_ci95"]
    assert low <= figures["final_test_accuracy"] <= high and high - low > 0.05      # n = 200: a wide interval
    assert figures["run_config"]["theta-lr"] == 0.1 and figures["wall_s"] > 0 and figures["commit"]
    assert (tmp_path / "runs").is_dir() and figures["run"].startswith(str(tmp_path / "runs"))
    bad = runner.invoke(app, ["bench", "target", "--recipe", "cifar100", "--data-root", str(data_root)])
    assert bad.exit_code != 0 and "mnist, cifar10-subset" in flat(bad.output)
