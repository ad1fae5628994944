"""The docker-compose topology as local processes on 127.0.0.1: SuperLink, interceptor proxy, N SuperNodes.

``LocalDeployment`` starts every process in its own session (so a whole process group can be stopped),
writes a private ``FLWR_HOME`` with the federation, submits the run with ``flwr run``, waits for it, and on
exit, normal or not, stops everything it started: SuperNodes first, then the proxy (SIGINT: it finishes its
attacks and reports), then the SuperLink. Ports are found free on 127.0.0.1 and are all distinct.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Self

from pydantic import BaseModel, ConfigDict, Field

from simulations.certs import generate_certificates

FEDERATION = "archleak-local"


class DeployPlan(BaseModel):
    """What ``archleak deploy local`` starts."""

    model_config = ConfigDict(frozen=True)
    clients: int = Field(2, ge=1, le=64)
    rounds: int = Field(2, ge=1)
    tls: bool = False
    interceptor: bool = True
    attack: str = Field("after-run", pattern="^(capture|live|after-run)$")
    threat_model: str = "wire"
    workdir: Path
    app_dir: Path
    run_config: dict[str, Any] = Field(default_factory=dict)
    attack_settings: tuple[str, ...] = ()
    timeout_s: float = Field(3600.0, gt=0)


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all sockets held open until every port is chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool | int | float) else json.dumps(str(value))


def run_config_arg(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def write_federation(flwr_home: Path, address: str, root_certificates: Path | None) -> None:
    """``$FLWR_HOME/config.toml`` with one SuperLink connection, the default (Flower 1.42 keeps them there)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    auth = f"root-certificates = {json.dumps(str(root_certificates))}" if root_certificates else "insecure = true"
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\naddress = "{address}"\n{auth}\n')


def submit_run(app_dir: Path, address: str, run_config: Mapping[str, Any], flwr_home: Path,
               root_certificates: Path | None, out: IO[bytes] | None, env: Mapping[str, str] | None = None,
               timeout_s: float = 3600.0) -> tuple[int, float]:
    """``flwr run APP archleak-local --stream``: returns (exit code, seconds); the code is 0 once the run ended."""
    write_federation(flwr_home, address, root_certificates)
    cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(app_dir), FEDERATION, "--stream"]
    if run_config:
        cmd += ["--run-config", run_config_arg(run_config)]
    started = time.monotonic()
    proc = subprocess.run(cmd, env={**(env or os.environ), "FLWR_HOME": str(flwr_home)}, stdout=out,
                          stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
    return proc.returncode, time.monotonic() - started


class LocalDeployment:
    """Context manager: ``with LocalDeployment(plan) as d: result = d.run()``."""

    def __init__(self, plan: DeployPlan, log: Callable[[str], None] = print) -> None:
        self.plan, self.log = plan, log
        self.work = plan.workdir.resolve()
        self.logs = self.work / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self._files: list[IO[bytes]] = []
        self.stop_codes: dict[str, int | None] = {}
        link, proxy, *nodes = free_ports(2 + plan.clients)
        self.ports = {"superlink": link, "proxy": proxy, "supernodes": nodes}
        bindir = str(Path(sys.executable).parent)   # flower-superlink starts flower-superexec from PATH
        self.env = {**os.environ, "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")]),
                    "FLWR_HOME": str(self.work / "flwr-home"), "PYTHONUNBUFFERED": "1",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "OMP_NUM_THREADS": "1"}
        self.certs = generate_certificates(self.work / "certs") if plan.tls else {}

    # --- processes --------------------------------------------------------------------------------
    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(out)
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def _tls_args(self, client: bool) -> list[str]:
        if not self.plan.tls:
            return ["--insecure"]
        if client:
            return ["--root-certificates", str(self.certs["ca"])]
        return ["--ssl-certfile", str(self.certs["cert"]), "--ssl-keyfile", str(self.certs["key"]),
                "--ssl-ca-certfile", str(self.certs["ca"])]

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        bindir = Path(sys.executable).parent
        link = self.ports["superlink"]
        proc = self._start("superlink", [str(bindir / "flower-superlink"), "--host", "127.0.0.1", "--port", str(link),
                                         "--disable-runtime-dependency-installation", *self._tls_args(False)])
        wait_for_port(link, proc, "flower-superlink")
        fleet = link
        if self.plan.interceptor:
            fleet = self.ports["proxy"]
            proc = self._start("interceptor", [
                sys.executable, "-m", "simulations.cli", "intercept", "--listen", f"127.0.0.1:{fleet}",
                "--upstream", f"127.0.0.1:{link}", "--captures", str(self.work / "intercepted"),
                "--attack", self.plan.attack, "--threat-model", self.plan.threat_model,
                "--evaluation-runs", str(self.work / "runs"),    # same machine: the clients' log is reachable
                *[a for s in self.plan.attack_settings for a in ("--set", s)]])
            wait_for_port(fleet, proc, "archleak intercept")
        for i, port in enumerate(self.ports["supernodes"]):
            self._start(f"supernode-{i}", [
                str(bindir / "flower-supernode"), "--superlink", f"127.0.0.1:{fleet}", *self._tls_args(True),
                "--port", str(port), "--node-config", f"partition-id={i} num-partitions={self.plan.clients}"])

    def run(self) -> dict[str, Any]:
        """Submit the run, stream its log to ``logs/flwr-run.log`` and wait for it to finish."""
        output = self.work / "runs"
        config = {"num-server-rounds": self.plan.rounds, "interceptor": "off", "output-dir": str(output),
                  **self.plan.run_config}
        with open(self.logs / "flwr-run.log", "wb") as out:
            code, wall = submit_run(self.plan.app_dir, f"127.0.0.1:{self.ports['superlink']}", config,
                                    self.work / "flwr-home", self.certs.get("ca"), out, self.env,
                                    self.plan.timeout_s)
        runs = sorted(p for p in output.iterdir() if (p / "summary.json").exists()) if output.exists() else []
        return {"returncode": code, "wall_s": wall, "runs": [str(p) for p in runs],
                "completed": code == 0 and bool(runs), "log": str(self.logs / "flwr-run.log")}

    def stop(self) -> dict[str, int | None]:
        """SuperNodes, then the proxy (SIGINT, so it reports and finishes its attacks), then the SuperLink."""
        order = [n for n in self.procs if n.startswith("supernode")] + ["interceptor", "superlink"]
        codes: dict[str, int | None] = {}
        for name in order:
            proc = self.procs.get(name)
            if proc is None:
                continue
            wait = self.plan.timeout_s if name == "interceptor" else 20.0
            family = descendants(proc.pid)   # Flower detaches some children (superexec) into new sessions
            codes[name] = _stop_group(proc, signal.SIGINT if name == "interceptor" else signal.SIGTERM, wait)
            _kill_all(family)
        for f in self._files:
            f.close()
        self._files = []
        self.stop_codes.update(codes)
        self.procs.clear()
        return codes

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_group(proc: subprocess.Popen, sig: int, wait_s: float) -> int | None:
    """Signal the process group, wait, then SIGKILL whatever is left of it: nothing outlives the launcher."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return proc.poll()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), whatever session or group it moved to."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_all(pids: list[int], grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.1)
        pids = alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
