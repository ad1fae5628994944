"""The deployment topology as local processes on 127.0.0.1: SuperLink, the on-path proxy, SuperNodes, flwr run."""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from attacker.capture import CaptureStore
from fednas.run import load_latest_checkpoint
from fednas.storage import read_jsonl
from simulations.deploy import DeployPlan, LocalDeployment, _zombie, descendants
from tests.conftest import REPO

TINY = {"theta-steps": 1, "eval-samples": 32, "channels": 4, "nodes": 2, "samples-per-client": 64}
ATTACK = ("attack-iterations=5", "attack-aux-samples=200")


def deploy(tmp_path: Path, name: str, mnist_or_digits: str, data_root: Path, **plan) -> tuple[dict, LocalDeployment]:
    plan = DeployPlan(workdir=tmp_path / name, app_dir=REPO, attack_settings=ATTACK, timeout_s=600,
                      run_config={**TINY, "dataset": mnist_or_digits, "data-root": str(data_root)}, **plan)
    with LocalDeployment(plan, log=lambda _: None) as d:
        result = d.run()
        family = [pid for p in d.procs.values() for pid in (p.pid, *descendants(p.pid))]
    assert result["completed"], (d.logs / "flwr-run.log").read_text()[-3000:]
    alive = [pid for pid in family if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert not alive, f"processes outlived the launcher: {alive}"
    return result, d


def final_model(result: dict) -> dict[str, torch.Tensor]:
    (run,) = result["runs"]
    server_round, tensors, _ = load_latest_checkpoint(Path(run), log=lambda _: None)
    assert server_round == 2
    return tensors


def assert_nothing_left(d: LocalDeployment) -> None:
    assert not d.procs and all(code is not None for code in d.stop_codes.values())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, mnist_or_digits, data_root):
    result, _ = deploy(tmp_path_factory.mktemp("deploy"), "direct", mnist_or_digits, data_root, interceptor=False)
    return final_model(result)


def test_through_the_proxy_every_reply_is_captured_attacked_and_the_model_is_unchanged(
        tmp_path, baseline, mnist_or_digits, data_root):
    result, d = deploy(tmp_path, "proxied", mnist_or_digits, data_root, clients=2, rounds=2, attack="after-run")
    assert_nothing_left(d)
    proxied = final_model(result)
    assert set(proxied) == set(baseline) and all(torch.equal(proxied[k], baseline[k]) for k in baseline)
    (run_dir,) = [p for p in (d.work / "intercepted").iterdir() if p.is_dir()]
    records = list(CaptureStore(run_dir / "captures").records())
    assert sorted((r.server_round, r.node_id) for r in records) == sorted(
        (rnd, node) for rnd in (1, 2) for node in {r.node_id for r in records})
    assert len({r.node_id for r in records}) == 2 and all(r.tap == "http-proxy" and r.reply_blob for r in records)
    assert all("alpha:normal" in r.reply_arrays and "theta:stem.0.weight" in r.broadcast_arrays for r in records)
    metrics = read_jsonl(run_dir / "reconstructions" / "wire" / "metrics.jsonl")
    assert len(metrics) == 4 and not any(m.get("error") for m in metrics)
    assert (run_dir / "reconstructions" / "wire" / "index.html").exists()


def test_with_tls_the_proxy_sees_only_ciphertext_and_the_run_completes(tmp_path, baseline, mnist_or_digits,
                                                                       data_root):
    result, d = deploy(tmp_path, "tls", mnist_or_digits, data_root, tls=True)
    assert_nothing_left(d)
    report = (d.work / "intercepted" / "proxy.json").read_text()
    assert '"inspectable": false' in report and '"captures": 0' in report
    assert not [p for p in (d.work / "intercepted").iterdir() if p.is_dir()]
    log = (d.logs / "interceptor.log").read_text()
    assert "cannot be inspected" in log
    tls_model = final_model(result)
    assert all(torch.equal(tls_model[k], baseline[k]) for k in baseline)


def test_killing_the_attack_worker_mid_run_does_not_fail_the_run(tmp_path, mnist_or_digits, data_root):
    plan = DeployPlan(workdir=tmp_path / "killed", app_dir=REPO, attack="live", attack_settings=ATTACK, rounds=2,
                      timeout_s=600, run_config={**TINY, "dataset": mnist_or_digits, "data-root": str(data_root)})
    killed: list[int] = []
    with LocalDeployment(plan, log=lambda _: None) as d:
        def kill_worker() -> None:
            deadline = time.monotonic() + 300
            while not killed and time.monotonic() < deadline:
                for pid in descendants(d.procs["interceptor"].pid):
                    cmdline = b""
                    with contextlib.suppress(OSError):
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"attacker.service" in cmdline:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                time.sleep(0.2)

        killer = threading.Thread(target=kill_worker)
        killer.start()
        result = d.run()
        killer.join()
    assert killed and result["completed"]
    assert_nothing_left(d)
    (run_dir,) = [p for p in (d.work / "intercepted").iterdir() if p.is_dir()]
    assert len(list(CaptureStore(run_dir / "captures").records())) == 4    # captures keep coming: the relay is unaffected
