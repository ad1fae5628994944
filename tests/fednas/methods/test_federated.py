"""Each search method end to end through the server's and clients' core functions: rounds recorded, a genotype,
the same seed giving the same genotype and the same checkpoint."""

import pytest
import torch

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


@pytest.mark.parametrize("method", ["enas", "smash"])
def test_the_last_rounds_train_the_adopted_child_alone(method, data_root, tmp_path):
    """child-train-share = 0.3 of 3 rounds: round 3 trains the child round 2 adopted, reads no D^α, and leaves the
    method's own tensors and the architecture as they were."""
    overrides = tiny_method(method, "digits", data_root, tmp_path, **{"num-server-rounds": 3,
                                                                       "child-train-share": 0.3})
    run, _ = federate(overrides)
    rounds = read_jsonl(run.dir / "rounds.jsonl")
    assert [r["client_metrics"].get("child-training", 0.0) for r in rounds] == [0.0, 0.0, 1.0]
    assert rounds[2]["genotype"] == rounds[1]["genotype"], "the child trains; the architecture stays"
    second, _ = load_tensors(run.dir / "checkpoints" / "round-0002.safetensors")
    third, _ = load_tensors(run.dir / "checkpoints" / "round-0003.safetensors")
    own = [k for k in second if k.startswith(("ctrl:", "hyper:", "rank:"))]
    assert own and all(torch.equal(second[k], third[k]) for k in own)
    assert all(torch.equal(second[k], third[k]) for k in second if k.startswith("alpha:"))
    assert any(not torch.equal(second[k], third[k]) for k in second if k.startswith("theta:"))
    assert rounds[2]["client_metrics"]["alpha-steps"] == 0 and rounds[2]["client_metrics"]["theta-steps"] > 0


def test_child_training_leaves_one_search_round_at_least():
    from fednas.methods.knobs import MethodKnobs

    knobs = MethodKnobs(search_method="enas", child_train_share=0.9)
    assert [knobs.trains_child(r, 3) for r in (1, 2, 3)] == [False, True, True]
    assert not knobs.trains_child(1, 1)
    half = MethodKnobs(search_method="smash")   # the default: half of the rounds, rounded up
    assert [half.trains_child(r, 5) for r in range(1, 6)] == [False, False, True, True, True]
    assert [half.trains_child(r, 2) for r in (1, 2)] == [False, True]
    assert not MethodKnobs(search_method="darts", child_train_share=0.9).trains_child(3, 3)


def test_enas_adopts_the_best_ranked_cell_of_the_controller_it_sent(data_root, tmp_path):
    """ENAS's derivation: round 1's model is the cell, among those sampled from the initial controller, with the
    best mean D^α accuracy the clients sent back; each client ranked them on its own D^α sample."""
    from fednas.methods.child import encode
    from fednas.methods.rounds import enas_candidates, enas_extra

    overrides = tiny_method("enas", "digits", data_root, tmp_path, **{"num-server-rounds": 1, "enas-candidates": 4})
    run, _ = federate(overrides)
    tensors, _ = load_tensors(run.dir / "checkpoints" / "round-0001.safetensors")
    scores = tensors["rank:scores"]
    assert scores.shape == (4,) and bool(((scores >= 0) & (scores <= 1)).all())
    cells = enas_candidates(run.model, run.cfg, enas_extra(run.model, run.cfg, run.cfg.seed), run.cfg.seed, 1)
    best = encode(cells[int(scores.argmax())], run.model.spec)
    assert all(torch.equal(tensors[f"alpha:{g}"], a) for g, a in best.items())
    assert len(cells) == 4 and any(c != cells[0] for c in cells[1:]), "the candidates are samples, not one cell"
