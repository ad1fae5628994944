"""docker-compose.yml: valid for Debian's docker-compose, and every service command exists in the installed CLIs."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require_program

VARIANTS = [[], ["deploy/compose.no-interceptor.yml"], ["deploy/compose.tls.yml"]]
# the executable each image runs: Flower's images have theirs as entrypoint, the app image runs flower-superexec
IMAGE_ENTRYPOINTS = {"flwr/superlink": "flower-superlink", "flwr/supernode": "flower-supernode",
                     "archleak-app": "flower-superexec"}


def compose_args(variant: list[str]) -> list[str]:
    return [a for f in ["docker-compose.yml", *variant] for a in ("-f", f)]


@functools.cache
def _config(variant: tuple[str, ...]) -> str:
    require_program("docker-compose", "apt-get install docker-compose; .ci/run installs it")
    # Debian's docker-compose is a program of the system Python: keep the test process's Python settings
    # (PYTHONPATH and friends, which in-process Ray simulations may set) away from it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    out = subprocess.run(["docker-compose", *compose_args(list(variant)), "--profile", "four-clients", "config"],
                         cwd=REPO, capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def resolved(variant: list[str]) -> dict:
    return yaml.safe_load(_config(tuple(variant)))


@functools.cache
def help_text(program: tuple[str, ...]) -> str:
    exe = Path(sys.executable).with_name(program[0])
    out = subprocess.run([str(exe), *program[1:], "--help"], capture_output=True, text=True, check=True,
                         env={"COLUMNS": "200", "PATH": str(exe.parent)})
    return out.stdout + out.stderr


@pytest.mark.parametrize("variant", VARIANTS, ids=["default", "no-interceptor", "tls"])
def test_compose_config_passes_and_every_flag_exists_in_the_installed_cli(variant):
    services = resolved(variant)["services"]
    assert {"superlink", "superexec-serverapp", "interceptor", "supernode-1", "supernode-4",
            "superexec-clientapp-4", "submit", "gallery"} <= set(services)
    for name, service in services.items():
        command = list(service.get("command", []))
        entry = service.get("entrypoint")
        image = service["image"].split(":")[0]
        program = list(entry) if entry else [IMAGE_ENTRYPOINTS[image]]
        if program == ["python"]:
            assert command[:2] == ["-m", "http.server"], name
            continue
        if program == ["archleak"]:      # subcommands: archleak intercept / archleak deploy submit
            depth = 2 if command[0] == "deploy" else 1
            program, command = program + command[:depth], command[depth:]
        text = help_text(tuple(program))
        flags = [c.split("=")[0] for c in command if c.startswith("--")]
        missing = [f for f in flags if f not in text]
        assert not missing, f"{name}: {' '.join(program)} has no {missing}"


def test_supernodes_reach_the_superlink_through_the_interceptor_unless_the_baseline_override_is_used():
    default, baseline = resolved([])["services"], resolved(VARIANTS[1])["services"]
    for i in range(1, 5):
        target = default[f"supernode-{i}"]["command"]
        assert target[target.index("--superlink") + 1] == "interceptor:9099"
        assert f"partition-id={i - 1}" in " ".join(target)
        direct = baseline[f"supernode-{i}"]["command"]
        assert direct[direct.index("--superlink") + 1] == "superlink:8000"
    tls = resolved(VARIANTS[2])["services"]
    assert all("--insecure" not in tls[f"supernode-{i}"]["command"] for i in range(1, 5))
    assert "--ssl-certfile" in tls["superlink"]["command"]
