"""The real user path: ``flwr run .`` against a managed local SuperLink (temporary FLWR_HOME, free ports)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fednas.storage import read_jsonl
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def superlinks_of(flwr_home: Path) -> list[int]:
    """PIDs of flower-superlink processes whose log file lives under ``flwr_home``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"flower-superlink" in a for a in args) and any(str(flwr_home).encode() in a for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


def test_flwr_run_dot_completes_and_writes_the_run(tmp_path, data_root, mnist_or_digits):
    flwr_home = tmp_path / "flwr-home"
    out = tmp_path / "runs"
    bindir = str(Path(sys.executable).parent)      # flwr starts flower-superlink from PATH
    env = {**os.environ, "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")]), "FLWR_HOME": str(flwr_home),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    run_config = (f"num-server-rounds=2 dataset='{mnist_or_digits}' data-root='{data_root}' "
                  f"output-dir='{out}' theta-steps=1 eval-samples=32 channels=4 nodes=2 samples-per-client=64 "
                  "attack-iterations=5 attack-restarts=1 attack-aux-samples=200 attacks='adra'")
    flwr = Path(sys.executable).with_name("flwr")
    try:
        proc = subprocess.run([str(flwr), "run", ".", "--stream", "--run-config", run_config,
                               "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        runs = list(out.iterdir())
        assert len(runs) == 1, log[-3000:]
        assert [r["round"] for r in read_jsonl(runs[0] / "rounds.jsonl")] == [1, 2]
        assert json.loads((runs[0] / "summary.json").read_text())["rounds"] == 2
        assert f"writes to {runs[0]}" in log and f"results in {runs[0]}" in log
        # the default after-run interceptor attacked every capture and wrote its gallery
        metrics = read_jsonl(runs[0] / "reconstructions" / "wire" / "metrics.jsonl")
        assert len(metrics) == 4 and not any(m.get("error") for m in metrics), log[-3000:]
        assert (runs[0] / "reconstructions" / "wire" / "index.html").exists() and "ADRA results" in log
    finally:
        for pid in superlinks_of(flwr_home):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while superlinks_of(flwr_home) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert not superlinks_of(flwr_home), "the managed SuperLink outlived the test"
