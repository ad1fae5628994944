"""Each search method end to end through the server's and clients' core functions: rounds recorded, a genotype,
the same seed giving the same genotype and the same checkpoint."""

import pytest

from fednas.storage import load_tensors, read_jsonl
from tests.fednas.methods.federate import federate, tiny_method


@pytest.mark.parametrize("method", ["darts", "pdarts", "enas", "smash"])
def test_one_method_federated_is_reproducible(method, data_root, tmp_path):
    overrides = tiny_method(method, "digits", data_root, tmp_path / "a", **(
        {"num-server-rounds": 2, "pdarts-keep": "5", "pdarts-skip-dropout": "0.0,0.3"} if method == "pdarts" else {}))
    run, summary = federate(overrides)
    again, summary_again = federate({**overrides, "output-dir": str(tmp_path / "b")})
    assert summary["search_method"] == method
    assert summary["genotype"] == summary_again["genotype"]
    assert summary["final_genotype"]["normal"]["edges"]
    rounds = read_jsonl(run.dir / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2] and all(0 <= r["test_accuracy"] <= 1 for r in rounds)
    first, _ = load_tensors(run.dir / "checkpoints" / "round-0002.safetensors")
    second, _ = load_tensors(again.dir / "checkpoints" / "round-0002.safetensors")
    assert first.keys() == second.keys() and all(bool((first[k] == second[k]).all()) for k in first)
    own = {"enas": "ctrl:", "smash": "hyper:"}.get(method)
    if own:
        assert any(k.startswith(own) for k in first), f"the checkpoint must hold {method}'s own tensors"
    if method == "pdarts":
        assert run.model.spec.cells == 3 + 2, "the second stage is two cells deeper"


@pytest.mark.parametrize("method", ["pdarts", "enas", "smash"])
def test_a_resumed_run_reaches_the_same_model(method, data_root, tmp_path):
    """PDARTS resumes in its next stage; ENAS and SMASH take their own tensors back from the checkpoint."""
    overrides = tiny_method(method, "digits", data_root, tmp_path, **{
        "num-server-rounds": 2, "pdarts-keep": "5", "pdarts-skip-dropout": "0.0,0.3"})
    straight, _ = federate(overrides)
    first, _ = federate({**overrides, "num-server-rounds": 1, "output-dir": str(tmp_path / "r")})
    resumed, _ = federate({**overrides, "output-dir": str(tmp_path / "r"), "resume-from": str(first.dir)})
    a, _ = load_tensors(straight.dir / "checkpoints" / "round-0002.safetensors")
    b, _ = load_tensors(resumed.dir / "checkpoints" / "round-0002.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
