"""Shared fixtures. Data: $FEDNAS_DATA_ROOT, else ../shared/data next to the repo; MNIST tests fall back
to the bundled digits when MNIST is absent (a fresh machine without internet), and say so."""

from __future__ import annotations

import os

# One intra-op thread per process, here and in every process a test starts (CLI runs, SuperLinks, SuperNodes):
# the suite runs processes side by side on a few cores (Ray actors, deployments, a second xdist worker), and
# OpenMP's spinning threads then wait on each other; a 113 s test took 6 s with one thread at load 3 on 2 cores.
# Set before torch is imported, so that the OpenMP pool is created with one thread.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
# Simulated federations call their clients in this process instead of starting Ray (10-40 s per federation here):
# the same run (tests/simulations/test_engines.py compares the models); `flwr run .` and that comparison use Ray.
os.environ.setdefault("ARCHLEAK_SIMULATION_ENGINE", "in-process")

import shutil
from pathlib import Path

import pytest
import torch

from fednas.data import DATASETS

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("FEDNAS_DATA_ROOT")
    return Path(env).resolve() if env else (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="session")
def mnist_or_digits(data_root: Path) -> str:
    """'mnist' when it is on disk, else 'digits' (offline fallback)."""
    if DATASETS.get("mnist").present(data_root):
        return "mnist"
    print(f"MNIST not under {data_root}: using the bundled digits")
    return "digits"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Cached models (oracle, learned prior) go to a folder of this test run, never to the user's ~/.cache. The
    pytest-xdist workers of one run share it (each worker's base folder sits in the run's): the cache's file locks
    let one worker train a model while the others wait for it, instead of each training its own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "xdg-cache"
    folder.mkdir(exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(folder)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative output paths of a test never reach the user's ~/archleak."""
    monkeypatch.setenv("ARCHLEAK_HOME", str(tmp_path / "archleak-home"))


TINY_RUN = {"num-server-rounds": 1, "theta-steps": 1, "theta-batch-size": 8, "eval-samples": 16, "channels": 4,
            "nodes": 2, "samples-per-client": 60}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_root, mnist_or_digits):
    """One tiny finished search (2 clients, 1 round, captures stored, not attacked), shared across tests."""
    from simulations.simulate import simulate

    return simulate({"dataset": mnist_or_digits, "data-root": str(data_root), **TINY_RUN,
                     "output-dir": str(tmp_path_factory.mktemp("tiny-runs")), "interceptor": "capture"})


def flat(text: str) -> str:
    """CLI output without rich's panel borders and line wrapping (where a message wraps depends on the
    terminal width and on the length of the paths in it)."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def require_program(name: str, how: str) -> str:
    """The path of an external program a test needs. Where it is absent, the test fails under CI (``.ci/run``
    installs it and sets ARCHLEAK_CI=1) and is skipped elsewhere, with the reason and ``how`` to install it."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ({how})"
        if os.environ.get("ARCHLEAK_CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
