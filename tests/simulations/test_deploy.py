"""The deployment topology as local processes on 127.0.0.1: SuperLink, the on-path proxy, SuperNodes, flwr run.

Four independent deployments (own ports, own FLWR_HOME) run side by side, since most of a deployed round is
process start-up and polling: without the proxy, through it, with TLS, and with the attack worker killed.
"""

import contextlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from attacker.wire.capture import CaptureStore
from fednas.run_folder import RunFolder
from fednas.storage import read_jsonl
from simulations.deploy import DeployPlan, LocalDeployment, _zombie, descendants
from tests.conftest import REPO

TINY = {"theta-steps": 1, "eval-samples": 32, "channels": 4, "nodes": 2, "samples-per-client": 64}
ATTACK = ("attack-iterations=5", "attack-aux-samples=200", "attacks=adra")
# TLS and the killed worker need no second round: what they show happens (or not) from the first exchange on
PLANS = {"direct": {"interceptor": False}, "proxied": {"attack": "after-run"}, "tls": {"tls": True, "rounds": 1},
         "killed": {"attack": "live", "rounds": 1}}


def kill_attack_worker(d: LocalDeployment, killed: list[int], done: threading.Event) -> None:
    """SIGKILL the proxy's attack worker as soon as it appears (it starts when the run is seen on the wire)."""
    while not killed and not done.is_set():
        proxy = d.procs.get("interceptor")
        for pid in descendants(proxy.pid) if proxy else []:
            cmdline = b""
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"attacker.interceptor.worker" in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)


def deploy(work: Path, name: str, run_config: dict) -> dict:
    plan = DeployPlan(workdir=work / name, app_dir=REPO, attack_settings=ATTACK, timeout_s=900,
                      run_config=run_config, **{"rounds": 2, **PLANS[name]})
    killed: list[int] = []
    done = threading.Event()
    with LocalDeployment(plan, log=lambda _: None) as d:
        killer = threading.Thread(target=kill_attack_worker, args=(d, killed, done))
        if name == "killed":
            killer.start()
        result = d.run()
        done.set()
        family = [pid for p in d.procs.values() for pid in (p.pid, *descendants(p.pid))]
    if killer.is_alive():
        killer.join()
    alive = [pid for pid in family if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    return {"result": result, "d": d, "alive": alive, "killed": killed}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_or_digits, data_root):
    work = tmp_path_factory.mktemp("deploy")
    config = {**TINY, "dataset": mnist_or_digits, "data-root": str(data_root)}
    with ThreadPoolExecutor(len(PLANS)) as pool:
        futures = {name: pool.submit(deploy, work, name, config) for name in PLANS}
        out = {name: f.result() for name, f in futures.items()}
    for name, run in out.items():
        assert run["result"]["completed"], (name, (run["d"].logs / "flwr-run.log").read_text()[-3000:])
        assert not run["alive"], f"{name}: processes outlived the launcher: {run['alive']}"
        assert not run["d"].procs and all(c is not None for c in run["d"].stop_codes.values())
    return out


def final_model(run: dict) -> dict[str, torch.Tensor]:
    (folder,) = run["result"]["runs"]
    server_round, tensors, _ = RunFolder(folder).latest_checkpoint(log=lambda _: None)
    assert server_round == 2
    return tensors


def same_model(a: dict, b: dict) -> bool:
    ma, mb = final_model(a), final_model(b)
    return set(ma) == set(mb) and all(torch.equal(ma[k], mb[k]) for k in ma)


def intercepted_run(run: dict) -> Path:
    (run_dir,) = [p for p in (run["d"].work / "intercepted").iterdir() if p.is_dir()]
    return run_dir


def test_through_the_proxy_every_reply_is_captured_attacked_and_the_model_is_unchanged(runs):
    assert same_model(runs["proxied"], runs["direct"])        # transparency: same seed, same final model
    run_dir = intercepted_run(runs["proxied"])
    records = list(CaptureStore(run_dir / "captures").records())
    nodes = {r.node_id for r in records}
    assert len(nodes) == 2
    assert sorted((r.server_round, r.node_id) for r in records) == sorted((k, n) for k in (1, 2) for n in nodes)
    assert all(r.tap == "http-proxy" and r.reply_blob for r in records)
    assert all("alpha:normal" in r.reply_arrays and "theta:stem.0.weight" in r.broadcast_arrays for r in records)
    metrics = read_jsonl(run_dir / "reconstructions" / "wire" / "metrics.jsonl")
    assert len(metrics) == 4 and not any(m.get("error") for m in metrics)
    # scored like a simulated run: the clients' evaluation-only log (under the SuperLink side's runs/) is reachable
    summary = json.loads((run_dir / "reconstructions" / "wire" / "summary.json").read_text())
    assert summary["evaluation_log"]["present"], summary["evaluation_log"]
    assert all("psnr" in image and "ssim" in image for m in metrics for image in m["images"])
    assert summary["images_scored"] == sum(len(m["images"]) for m in metrics) > 0
    assert "not scored" not in (run_dir / "reconstructions" / "wire" / "index.html").read_text()
    assert (run_dir / "reconstructions" / "wire" / "index.html").exists()


def test_with_tls_the_proxy_sees_only_ciphertext_and_the_run_completes(runs):
    d = runs["tls"]["d"]
    report = (d.work / "intercepted" / "proxy.json").read_text()
    assert '"inspectable": false' in report and '"captures": 0' in report
    assert not [p for p in (d.work / "intercepted").iterdir() if p.is_dir()]
    assert "cannot be inspected" in (d.logs / "interceptor.log").read_text()


def test_killing_the_attack_worker_mid_run_does_not_fail_the_run(runs):
    killed = runs["killed"]
    assert killed["killed"] and killed["result"]["completed"]
    assert len(list(CaptureStore(intercepted_run(killed) / "captures").records())) == 2   # the relay goes on
