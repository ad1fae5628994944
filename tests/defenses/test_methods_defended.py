"""The update defenses around a search method without α steps: every client's reply is averaged (a refused or
crashing client would leave the round with fewer clients, silently)."""

from fednas.storage import read_jsonl
from simulations.simulate import simulate


def test_local_dp_around_enas_keeps_every_client(data_root, tmp_path):
    run = simulate({"dataset": "digits", "data-root": str(data_root), "output-dir": str(tmp_path),
                    "num-server-rounds": 1, "theta-steps": 1, "theta-batch-size": 8, "alpha-steps": 1,
                    "alpha-batch-size": 4, "eval-samples": 32, "channels": 4, "nodes": 2, "samples-per-client": 60,
                    "interceptor": "off", "enas-hidden": 8, "search-method": "enas", "defenses": "local-dp-update"})
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["clients"] for r in rounds] == [2]
    assert rounds[0]["privacy"], "the local-DP releases are accounted"
