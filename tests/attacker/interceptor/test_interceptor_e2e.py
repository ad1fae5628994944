"""The eavesdropper beside a real (simulated) federation: transparency, captures, gallery, isolation."""

import json
import sys

import pytest
import torch

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.interceptor import Interceptor
from attacker.wire.capture import CaptureStore
from fednas.evaluation_log import ALPHA_BATCHES
from fednas.run_folder import RunFolder
from fednas.storage import load_tensors, read_jsonl
from simulations.simulate import simulate

TINY_ATTACK = {"attack-iterations": 3, "attack-restarts": 1, "attack-prior": "pixel", "attack-aux-samples": 200,
               "inversion-iterations": 2}


def overrides(dataset, data_root, out, **kw):
    cfg = {"dataset": dataset, "data-root": str(data_root), "output-dir": str(out), "num-server-rounds": 1,
           "theta-steps": 2, "theta-batch-size": 4, "eval-samples": 32, "channels": 4, "nodes": 2,
           "samples-per-client": 100, **TINY_ATTACK}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root, mnist_or_digits):
    base = tmp_path_factory.mktemp("tap")
    off = simulate(overrides(mnist_or_digits, data_root, base / "off", interceptor="off"))
    live = simulate(overrides(mnist_or_digits, data_root, base / "live", interceptor="live"))
    return off, live


def test_tap_is_transparent(runs):
    off, live = runs
    a, _ = load_tensors(off / "checkpoints" / "round-0001.safetensors")
    b, _ = load_tensors(live / "checkpoints" / "round-0001.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs with the tap on"
    assert not (off / "captures").exists()


def test_every_round_and_client_is_captured_attacked_and_shown(runs):
    _, live = runs
    records = list(CaptureStore(live / "captures").records())
    assert sorted((r.server_round, r.node_id) for r in records) == sorted(
        {(r.server_round, r.node_id) for r in records})
    assert len(records) == 2 and {r.server_round for r in records} == {1}
    assert all(r.reply_blob and "alpha:normal" in r.reply_arrays and "theta:stem.0.weight" in r.broadcast_arrays
               for r in records)
    metrics = read_jsonl(live / "reconstructions" / "wire" / "metrics.jsonl")
    service = json.loads((live / "reconstructions" / "wire" / "service.json").read_text())
    assert service["mode"] == "live" and service["attacked"] + 3 * service["dropped"] == 6
    attacked = {m["capture_id"] for m in metrics}
    assert len(attacked) == 2 - service["dropped"] and attacked <= {r.capture_id for r in records}
    # ADRA, the Δθ inversion and the joint attack on every capture, each scored against its own batches
    assert sorted((m["capture_id"], m["attack"]) for m in metrics) == sorted(
        (c, a) for c in attacked for a in ("adra", "theta", "joint"))
    sizes = {"adra": 1, "theta": 2 * 4, "joint": 1 + 2 * 4}      # α batch 1; θ: 2 steps of 4 images
    for m in metrics:
        assert not m.get("error") and (live / "reconstructions" / "wire" / m["png"]).exists()
        assert len(m["images"]) == sizes[m["attack"]]
        assert {"psnr", "ssim", "recognised", "identified", "baseline", "true_label"} <= set(m["images"][0])
    page = (live / "reconstructions" / "wire" / "index.html").read_text()
    assert "label-only baseline" in page and all(m["png"] in page for m in metrics)
    tap = json.loads((live / "summary.json").read_text())["tap"]      # the tap's own timers, in the run summary
    assert tap["captures"] == 2 and tap["errors"] == 0 and tap["hot_path_s"] > 0 and tap["writer_s"] > 0
    summary = json.loads((live / "reconstructions" / "wire" / "summary.json").read_text())
    assert set(summary["by_attack"]) == {"adra", "theta", "joint"}
    assert summary["by_attack"]["theta"]["attack"]["label"] >= 0.5     # analytic labels from the bias update


def test_the_attack_path_cannot_read_the_evaluation_log(runs):
    _, live = runs
    interceptor = Interceptor(live)
    # structurally: the attacking half holds public knowledge and settings, no dataset and no run folder
    held = [type(v).__name__ for v in vars(interceptor.attacker).values()]
    assert "ImageData" not in held and "RunFolder" not in held and "Scorer" not in held, held
    records = list(interceptor.store.records())
    targets = interceptor.targets(records[:1])
    opened = []
    watching = [False]

    def hook(event, args):
        if watching[0] and event == "open" and args and isinstance(args[0], (str, bytes)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    watching[0] = True
    try:
        interceptor.attacker.attack(targets)
    finally:
        watching[0] = False
    evaluation = str(RunFolder(live).evaluation)
    assert not [p for p in opened if p.startswith(evaluation)], "the attack opened the evaluation-only log"
    watching[0] = True                       # control: scoring does read it, so the hook can see it
    try:
        assert interceptor.scorer.truth(records[0], (ALPHA_BATCHES,)) is not None
    finally:
        watching[0] = False
    assert [p for p in opened if p.startswith(evaluation)]


def test_a_failing_capture_is_logged_and_the_rest_go_on(runs, tmp_path):
    import shutil

    _, live = runs
    copy = tmp_path / "run"
    shutil.copytree(live, copy, ignore=shutil.ignore_patterns("reconstructions"))
    store = CaptureStore(copy / "captures")
    records = list(store.records())
    victim = records[0]
    (store.blobs / f"{victim.reply_blob}.safetensors").write_bytes(b"garbage")
    lines = []
    stored = RunFolder(copy).section(InterceptorConfig)
    interceptor = Interceptor(copy, stored.model_copy(update={"attacks": "adra"}), log=lines.append)
    attacked = interceptor.process(records)
    assert attacked == 1
    failed = [m for m in read_jsonl(copy / "reconstructions" / "wire" / "metrics.jsonl") if m.get("error")]
    assert [m["capture_id"] for m in failed] == [victim.capture_id]
    assert any(victim.capture_id in line for line in lines)


def test_a_crashing_tap_never_stops_training(data_root, mnist_or_digits, tmp_path, monkeypatch):
    def broken(self, record):
        raise OSError("disk full")

    monkeypatch.setattr(CaptureStore, "append", broken)
    run = simulate(overrides(mnist_or_digits, data_root, tmp_path, interceptor="after-run"))
    assert [r["round"] for r in read_jsonl(run / "rounds.jsonl")] == [1]
    assert json.loads((run / "summary.json").read_text())["rounds"] == 1
