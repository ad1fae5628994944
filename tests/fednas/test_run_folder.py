"""The run folder: one object owns the layout and the stored configuration of a run."""

import pytest

from attacker.interceptor.config import InterceptorConfig
from fednas.config import RunConfig
from fednas.run_folder import RunFolder, RunNotFound
from fednas.storage import atomic_write_json, save_tensors


def stored_run(tmp_path, **config):
    folder = RunFolder(tmp_path / "run")
    atomic_write_json(folder.config_file, {"run_id": "7", "dataset": "mnist", "data_root": "/data",
                                           "config": {"dataset": "auto", "seed": 3, "threat-model": "wire",
                                                      "attack-iterations": 9, **config},
                                           "supernet": {}})
    return folder


def test_the_layout_is_named_once(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.checkpoint(3) == tmp_path / "checkpoints" / "round-0003.safetensors"
    assert folder.reconstructions("wire") == tmp_path / "reconstructions" / "wire"
    assert {folder.captures.name, folder.evaluation.name, folder.distilled.name} == {"captures", "evaluation",
                                                                                    "distilled"}


def test_each_package_reads_its_own_section_of_the_stored_config(tmp_path):
    folder = stored_run(tmp_path)
    fed = folder.federation()
    assert isinstance(fed, RunConfig) and fed.seed == 3 and fed.dataset == "mnist"   # auto resolved as the run did
    assert folder.federation(data_root="/elsewhere").data_root == "/elsewhere"
    attack = folder.section(InterceptorConfig)
    assert attack.attack_iterations == 9 and attack.interceptor == "after-run"
    assert folder.data_root() == "/data" and folder.data_root("/x") == "/x"


def test_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(RunNotFound, match="not a run folder"):
        RunFolder(tmp_path).meta()


def test_the_newest_readable_checkpoint_wins(tmp_path):
    import torch

    folder = RunFolder(tmp_path)
    save_tensors(folder.checkpoint(1), {"x": torch.ones(1)}, {"round": 1})
    save_tensors(folder.checkpoint(2), {"x": torch.full((1,), 2.0)}, {"round": 2})
    folder.checkpoint(3).write_bytes(b"torn")
    seen = []
    server_round, tensors, meta = folder.latest_checkpoint(seen.append)
    assert (server_round, float(tensors["x"]), meta["round"]) == (2, 2.0, 2) and "damaged" in seen[0]
    assert [r for r, _ in folder.checkpoints()] == [3, 2, 1]
