"""Where :func:`simulations.simulate.simulate` runs the simulated clients.

``ray``: Flower's simulation engine as ``flwr run .`` uses it (a Ray cluster, one actor process per concurrent
client). ``in-process``: the same ServerApp, ClientApp, SuperNode contexts and message flow through Flower's
simulation runtime, with the clients called one after another in this process instead of in Ray actors. Starting
Ray and importing the app into each actor costs 10–40 s per federation on 2 cores, which is most of a test's tiny
federation; the in-process engine gives the same run (``tests/simulations/test_engines.py`` compares the final
models) without that cost. Scripts, benchmarks and ``archleak reproduce`` use ``ray`` unless told otherwise; the
test suite sets ``ARCHLEAK_SIMULATION_ENGINE=in-process`` and runs ``flwr run .`` and the comparison on Ray.

Flower 1.42 builds its Ray backend by name inside its simulation runtime, so the in-process engine stands in for
that class for the duration of one federation (:func:`engine`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable, Iterator

import torch
from flwr.app.message import Context, Message
from flwr.clientapp.client_app import ClientApp, ClientAppException, LoadClientAppError
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig

from fednas.registry import Registry

ENV = "ARCHLEAK_SIMULATION_ENGINE"
ENGINES: Registry[Callable[[], contextlib.AbstractContextManager[None]]] = Registry("simulation engine")
_SWAP = threading.Lock()   # one federation at a time may replace Flower's backend class


class InProcessBackend(Backend):
    """A Flower simulation backend with one worker: this process. Each message and context is copied in and
    out, as Ray's serialisation would, so a client never shares an object with the runtime's state; a client
    computes with as many torch threads as its ``num_cpus`` (Ray gives an actor that many OpenMP threads), so
    both engines sum in the same order."""

    def __init__(self, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)
        resources = backend_config.get("client_resources") or {}
        self.threads = max(1, int(float(resources.get("num_cpus", 1))))   # type: ignore[arg-type]
        self.app_fn: Callable[[], ClientApp] | None = None
        self._busy = False

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return not self._busy

    def terminate(self) -> None:
        self.app_fn = None

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        if self.app_fn is None:
            raise RuntimeError("the in-process backend was not built")
        self._busy, threads = True, torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            app = self.app_fn()
            local = copy.deepcopy(context)
            reply = app(message=copy.deepcopy(message), context=local)
        except LoadClientAppError:
            raise
        except Exception as exc:   # reported to the server as the ClientApp's error, as on Ray
            raise ClientAppException(str(exc)) from exc
        finally:
            torch.set_num_threads(threads)
            self._busy = False
        return copy.deepcopy(reply), local


@ENGINES.register("ray")
@contextlib.contextmanager
def _ray() -> Iterator[None]:
    yield


@ENGINES.register("in-process")
@contextlib.contextmanager
def _in_process() -> Iterator[None]:
    from flwr.server.superlink.fleet.vce.backend import raybackend

    with _SWAP:
        original = raybackend.RayBackend
        raybackend.RayBackend = InProcessBackend   # type: ignore[misc]
        try:
            yield
        finally:
            raybackend.RayBackend = original   # type: ignore[misc]


def resolve(name: str | None) -> str:
    """The engine to use: ``name``, else ``$ARCHLEAK_SIMULATION_ENGINE``, else ``ray``; an unknown name is a
    one-line error naming the setting and the engines there are."""
    chosen = name or os.environ.get(ENV) or "ray"
    try:
        ENGINES.get(chosen)
    except ValueError as exc:
        source = "engine" if name else ENV
        raise ValueError(f"{source}: {exc}") from None
    return chosen


def engine(name: str) -> contextlib.AbstractContextManager[None]:
    """The context in which one federation runs on engine ``name``."""
    return ENGINES.get(name)()
