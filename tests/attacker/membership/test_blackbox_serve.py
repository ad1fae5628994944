"""The prediction API: HTTP answers equal the in-process ones; bad requests are refused clearly."""

import json
import re
import shutil
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from attacker.membership.blackbox import HttpBlackBox
from fednas.http_server import start_server
from fednas.resnet import ResNet
from fednas.run_folder import RunFolder, RunNotFound
from fednas.serve import model_black_box
from fednas.storage import load_tensors, save_tensors
from simulations.targets import load_target


@pytest.fixture(scope="module")
def served():
    torch.manual_seed(0)
    model = ResNet(8, 1, 10, (0.13,), (0.31,))
    box = model_black_box(model, {"num_classes": 10, "channels": 1, "height": 28, "width": 28, "dtype": "uint8",
                                  "model": "resnet-8"}, torch.device("cpu"), batch_size=64)
    server = start_server(box, "127.0.0.1", 0)
    yield box, server
    server.shutdown()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)


def test_http_and_in_process_posteriors_are_identical(served):
    box, server = served
    images = _images(150)
    local = box.predict(images)
    remote = HttpBlackBox(server.url, batch_size=64).predict(images)
    assert remote.dtype == np.float32 and remote.shape == (150, 10)
    np.testing.assert_array_equal(remote, local)
    np.testing.assert_allclose(local.sum(1), 1.0, atol=1e-5)
    assert HttpBlackBox(server.url).info() == box.info()


def test_json_requests_are_answered_too(served):
    box, server = served
    images = _images(3, seed=1)
    req = urllib.request.Request(server.url + "/v1/predict", data=json.dumps({"images": images.tolist()}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as resp:
        answer = np.array(json.loads(resp.read())["posteriors"], dtype=np.float32)
    np.testing.assert_allclose(answer, box.predict(images), rtol=1e-6)


@pytest.mark.parametrize(("body", "kind", "message"), [
    (b"not json", "application/json", "expected a JSON body"),
    (json.dumps({"images": [[[[300]]]]}).encode(), "application/json", "integers in \\[0, 255\\]"),
    (json.dumps({"images": np.zeros((1, 1, 8, 8), int).tolist()}).encode(), "application/json",
     "uint8 \\[N, 1, 28, 28\\]"),
])
def test_bad_requests_get_400_saying_what_is_expected(served, body, kind, message):
    _, server = served
    req = urllib.request.Request(server.url + "/v1/predict", data=body, headers={"Content-Type": kind}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400
    assert re.search(message, json.loads(err.value.read())["error"])


def test_client_refuses_wrong_shapes_before_sending(served):
    _, server = served
    with pytest.raises(ValueError, match="uint8"):
        HttpBlackBox(server.url).predict(np.zeros((2, 1, 28, 28), np.float32))


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(RunNotFound, match="not a run folder"):
        load_target(tmp_path, torch.device("cpu"))
    (tmp_path / "config.json").write_text(json.dumps({"config": {}, "dataset": "digits"}))
    with pytest.raises(RunNotFound, match="holds no model"):
        load_target(tmp_path, torch.device("cpu"))


def test_an_unreachable_service_is_one_line():
    from attacker.membership.blackbox import ServiceError

    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceError, match=r"^prediction service http://127\.0\.0\.1:\d+ is unreachable: .+$"):
        HttpBlackBox(f"http://127.0.0.1:{port}").info()


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("reconstructions", "captures"))
    return copy


def test_a_damaged_newest_checkpoint_is_named_with_the_round_that_answers(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    newest, path = RunFolder(run).checkpoints()[0]
    shutil.copy(path, path.with_name(f"round-{newest - 1:04d}.safetensors"))   # keep an older one in any case
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    lines = []
    box = load_target(run, torch.device("cpu"), log=lines.append)
    assert box.info()["round"] == newest - 1
    assert any(f"round-{newest:04d}" in line and "skipping damaged checkpoint" in line for line in lines)
    assert f"archleak: the model of round {newest - 1} answers (round {newest} is damaged)" in lines


def test_a_checkpoint_of_another_shape_is_a_clear_error(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    _, path = RunFolder(run).checkpoints()[0]
    tensors, meta = load_tensors(path)
    name = next(k for k in tensors if k.startswith("alpha:"))
    tensors[name] = torch.zeros(5, 3)
    save_tensors(path, tensors, meta)
    (RunFolder(run).checkpoint_dir / "round-9999.safetensors").mkdir()      # a folder is not a checkpoint
    with pytest.raises(ValueError, match=rf"state entry '{name}' has shape \[5, 3\]; the model needs"):
        load_target(run, torch.device("cpu"))
