"""The eavesdropper in a federation, in one call: tap the ServerApp's grid and run the interceptor beside it.

``Eavesdropper.start(grid, run_dir, run_id, settings)`` returns an object whose ``grid`` is the tapped grid (the
grid itself when the interceptor is off). After the last round, :meth:`close_tap` drains the tap (captures on
disk are complete) and :meth:`finish` lets the worker attack them (live: drain; after-run: run now).
Nothing here can fail or slow the federation: the tap only reads, the attack runs in another process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.service import InterceptorService
from attacker.wire.capture import CaptureStore
from attacker.wire.tap import TappedGrid
from fednas.run_folder import RunFolder


class Eavesdropper:
    """The tap and the interceptor service of one run (inactive when ``interceptor = off``)."""

    def __init__(self, grid: Grid, tap: TappedGrid | None, service: InterceptorService | None,
                 log: Callable[[str], None]) -> None:
        self.grid, self.tap, self.service, self.log = grid, tap, service, log

    @classmethod
    def start(cls, grid: Grid, run_dir: Path, run_id: str, settings: InterceptorConfig,
              log: Callable[[str], None] = print) -> Eavesdropper:
        if settings.interceptor == "off":
            return cls(grid, None, None, log)
        service = InterceptorService(run_dir, settings, log=log)
        service.start()
        tap = TappedGrid(grid, CaptureStore(RunFolder(run_dir).captures, report=log), run_id,
                         on_capture=service.submit, log=log)
        return cls(tap, tap, service, log)

    def close_tap(self) -> dict[str, Any]:
        """Write what the tap still holds; its figures for the run summary (``{}`` when off)."""
        if self.tap is None:
            return {}
        stats = self.tap.close()
        self.log(f"archleak: tap stored {stats.captures} captures ({stats.errors} errors); "
                 f"{stats.hot_path_s:.3f}s on the training path, {stats.writer_s:.2f}s in its writer thread")
        return {"tap": {"captures": stats.captures, "errors": stats.errors, "hot_path_s": stats.hot_path_s,
                        "writer_s": stats.writer_s}}

    def finish(self) -> dict[str, Any]:
        """Let the interceptor attack what was captured; its report (``{}`` when off). Never raises."""
        return {} if self.service is None else {"interceptor": self.service.finish()}
