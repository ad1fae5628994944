"""ENAS's rewards: the attacker's reading of a reward against the prior, on batches whose truth is known."""

import pytest
import torch

from attacker.reconstruct.reward import fit_reader
from attacker.scoring.reward_leakage import score_reader


def _pool(n=4000, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(classes, (n,), generator=gen), gen


def _batches(n, size, count, gen):
    return [torch.randperm(n, generator=gen)[:size] for _ in range(count)]


def test_a_reward_that_counts_one_class_reveals_its_share():
    labels, gen = _pool()
    correct = labels == 0                       # the cell gets exactly class 0 right: k = its count in the batch
    reader = fit_reader(correct, labels, 4, 8, 5000, gen)
    figures = score_reader(reader, correct, labels, _batches(len(labels), 8, 400, gen), 4, gen)
    assert figures["batches"] == 400 and figures["l1_reduction_ci95"][0] > 0.1
    assert figures["l1_reader"][0] < figures["l1_prior"][0]


def test_a_reward_independent_of_the_labels_reveals_nothing():
    labels, gen = _pool(seed=1)
    correct = torch.rand(len(labels), generator=gen) < 0.6
    reader = fit_reader(correct, labels, 4, 8, 5000, gen)
    figures = score_reader(reader, correct, labels, _batches(len(labels), 8, 400, gen), 4, gen)
    low, high = figures["l1_reduction_ci95"]
    assert low < 0.05 and high > -0.05 and abs(figures["l1_reduction"]) < 0.05


def test_bench_reward_reads_an_enas_run_and_refuses_others(data_root, tmp_path):
    from simulations.bench_reward import reward_leakage
    from tests.fednas.methods.federate import federate, tiny_method

    run, _ = federate(tiny_method("enas", "digits", data_root, tmp_path / "enas", **{"alpha-steps": 3}))
    figures = reward_leakage(run.dir, str(data_root), trials=500, public_samples=300)
    # the searching rounds (round 1; round 2 trains the adopted child) x clients x controller steps
    assert figures["batch_size"] == 4 and figures["batches"] == 1 * 2 * 3
    assert sum(figures["public_batches_per_reward"]) == 500 and "normal:" in figures["cell"]
    darts, _ = federate(tiny_method("darts", "digits", data_root, tmp_path / "darts"))
    with pytest.raises(ValueError, match="search-method = enas"):
        reward_leakage(darts.dir, str(data_root))
    from typer.testing import CliRunner

    from simulations.cli import app
    from tests.conftest import flat

    runner = CliRunner()
    result = runner.invoke(app, ["bench", "reward", "--run", str(run.dir), "--trials", "200", "--json",
                                 str(tmp_path / "r.json"), "--data-root", str(data_root)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["bench", "reward", "--run", str(darts.dir), "--data-root", str(data_root)])
    assert result.exit_code != 0 and "search-method = enas" in flat(result.output)
