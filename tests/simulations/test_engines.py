"""The two simulation engines: Ray (as under ``flwr run .``) and in-process give the same federation."""

from __future__ import annotations

import json

import pytest
import torch

from fednas.run_folder import RunFolder
from simulations.engines import ENV, resolve
from simulations.simulate import simulate

SMALL = {"num-server-rounds": 2, "theta-steps": 2, "theta-batch-size": 8, "eval-samples": 16, "channels": 4,
         "nodes": 2, "samples-per-client": 64, "interceptor": "off", "seed": 3}


def final_model(run) -> dict[str, torch.Tensor]:
    _, tensors, _ = RunFolder(run).latest_checkpoint(log=lambda _: None)
    return tensors


def test_ray_and_in_process_give_the_same_model_and_rounds(data_root, mnist_or_digits, tmp_path) -> None:
    config = {**SMALL, "dataset": mnist_or_digits, "data-root": str(data_root)}
    runs = {engine: simulate({**config, "output-dir": str(tmp_path / engine)}, num_clients=3, engine=engine)
            for engine in ("ray", "in-process")}
    ray, local = (final_model(runs[e]) for e in ("ray", "in-process"))
    assert ray.keys() == local.keys() and all(torch.equal(ray[k], local[k]) for k in ray)
    rounds = {e: [json.loads(line) for line in (runs[e] / "rounds.jsonl").read_text().splitlines()] for e in runs}
    assert [r["clients"] for r in rounds["ray"]] == [r["clients"] for r in rounds["in-process"]] == [3, 3]
    assert [r["test_accuracy"] for r in rounds["ray"]] == [r["test_accuracy"] for r in rounds["in-process"]]


def test_a_client_that_raises_is_a_failed_reply_as_on_ray_and_the_server_goes_on(
        data_root, mnist_or_digits, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("client broke")

    monkeypatch.setattr("app.client_app.run_client_round", broken)
    config = {**SMALL, "num-server-rounds": 1, "dataset": mnist_or_digits, "data-root": str(data_root),
              "output-dir": str(tmp_path)}
    run = simulate(config, num_clients=2, engine="in-process")
    (line,) = (run / "rounds.jsonl").read_text().splitlines()
    assert json.loads(line)["clients"] == 0   # both replies were errors; the round and the run completed


def test_an_unknown_engine_names_the_setting_and_the_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="engine: unknown simulation engine 'dask'; known: ray, in-process"):
        resolve("dask")
    monkeypatch.setenv(ENV, "threads")
    with pytest.raises(ValueError, match=f"{ENV}: unknown simulation engine 'threads'; known: ray, in-process"):
        resolve(None)
    monkeypatch.delenv(ENV)
    assert resolve(None) == "ray"
