"""End to end through Flower's simulation engine (in-process Ray): 2 clients x 2 rounds."""

import json

import pytest
import torch

from app.config import parse_app
from app.server_app import run_server
from fednas.data import load_dataset
from fednas.federation import DataChoice, make_model, run_client_round
from fednas.schema import ConfigError
from fednas.state import export_state, import_state
from fednas.storage import load_tensors, read_jsonl
from simulations.simulate import simulate


def tiny(dataset, data_root, out, **kw):
    cfg = {"dataset": dataset, "data-root": str(data_root), "output-dir": str(out), "num-server-rounds": 2,
           "theta-steps": 2, "theta-batch-size": 8, "eval-samples": 64, "channels": 4, "nodes": 2,
           "samples-per-client": 200, "interceptor": "off"}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory, data_root, mnist_or_digits):
    out = tmp_path_factory.mktemp("e2e") / "runs"
    overrides = tiny(mnist_or_digits, data_root, out)
    return simulate(overrides), overrides


def test_two_rounds_are_recorded_and_alpha_moves(two_rounds, data_root):
    run_dir, overrides = two_rounds
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients"] == 2 and 0.0 <= r["test_accuracy"] <= 1.0 for r in rounds)
    assert set(rounds[-1]["alpha_softmax"]) == {"normal", "reduce"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 0 and config["dataset"] == overrides["dataset"] and "torch" in config["versions"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final_genotype"] == rounds[-1]["genotype"]

    cfg = parse_app(overrides).federation
    data = load_dataset(overrides["dataset"], str(data_root))
    initial = make_model(cfg, data, torch.device("cpu"))
    tensors, meta = load_tensors(run_dir / "checkpoints" / "round-0002.safetensors")
    assert meta["round"] == 2
    loaded = make_model(cfg, data, torch.device("cpu"))
    import_state(loaded, tensors)          # the checkpoint loads into a fresh supernet
    for group, alpha in initial.alphas.items():
        assert not torch.allclose(alpha, loaded.alphas[group]), "the global α did not change"
    assert str(loaded.genotype().to_dict()) == str(summary["final_genotype"])


def test_resume_continues_to_the_same_model(two_rounds, tmp_path):
    run_dir, overrides = two_rounds
    first = simulate({**overrides, "num-server-rounds": 1, "output-dir": str(tmp_path / "runs")})
    assert [r["round"] for r in read_jsonl(first / "rounds.jsonl")] == [1]
    simulate({**overrides, "output-dir": str(tmp_path / "runs"), "resume-from": str(first)})
    assert [r["round"] for r in read_jsonl(first / "rounds.jsonl")] == [1, 2]
    resumed, _ = load_tensors(first / "checkpoints" / "round-0002.safetensors")
    straight, _ = load_tensors(run_dir / "checkpoints" / "round-0002.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)
    assert len(read_jsonl(first / "resumes.jsonl")) == 1


class NoGrid:
    def __getattr__(self, name):
        raise AssertionError("training started despite a bad config")


class FakeContext:
    run_id = 1
    run_config: dict = {}  # noqa: RUF012


def test_bad_value_stops_the_server_before_training():
    with pytest.raises(ConfigError, match="'activation'.*elu, tanh, sigmoid, relu"):
        run_server(NoGrid(), FakeContext(), {"activation": "swish"})


def test_share_weights_false_keeps_theta_on_the_client(data_root, mnist_or_digits, tmp_path):
    cfg = parse_app(tiny(mnist_or_digits, data_root, tmp_path, **{"share-weights": False})).federation
    data = load_dataset(cfg.dataset, str(data_root))
    received = export_state(make_model(cfg, data, torch.device("cpu")), weights=False)
    choice = DataChoice(cfg.dataset, data_root, "test")
    first = run_client_round(cfg, cfg.local_search(), 1, choice, 0, 2, received)
    assert all(k.startswith("alpha:") for k in first.state), "θ left the client"
    assert first.local_theta, "the client must keep its θ between rounds"
    second = run_client_round(cfg, cfg.local_search(), 2, choice, 0, 2, first.state, first.local_theta)
    assert all(k.startswith("alpha:") for k in second.state)
    changed = [k for k in second.local_theta if not torch.equal(second.local_theta[k], first.local_theta[k])]
    assert changed, "the client's θ did not continue training from its own state"
