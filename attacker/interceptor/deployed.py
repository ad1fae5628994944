"""The deployed eavesdropper: what the HTTP proxy observes becomes run folders the interceptor service attacks.

For every run seen on the wire the proxy writes ``<base>/<run-id>/config.json``. The configuration is the
published app's defaults (public knowledge: anyone can read the Flower App) plus the ``override_config`` that the
SuperLink sends to every SuperNode in its ``get-run`` answer, so nothing private is assumed. The same
:class:`~attacker.interceptor.service.InterceptorService` as in simulation then attacks the captures (live or after the
proxy stops) and writes the same logs, metrics and gallery. Scoring needs the clients' evaluation-only log: given
the federation's output folder (``--evaluation-runs``, reachable when the proxy runs beside the SuperLink), the
gallery carries the same metrics as a simulated run's; without it, the report says "not scored" and where it
looked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.service import InterceptorService
from attacker.wire.capture import CaptureRecord
from fednas.config import Sections, parse_sections
from fednas.federation import choose_data, describe_choice
from fednas.run_folder import RunFolder
from fednas.storage import atomic_write_json, package_versions


def observed_run_metadata(run_id: int, overrides: dict[str, Any], observed: bool, sections: Sections
                          ) -> dict[str, Any]:
    """``config.json`` for a run the proxy saw: the published app's defaults (its run-config ``sections``: public
    knowledge) + the overrides read off the wire."""
    app = parse_sections(overrides, sections)
    return {"run_id": str(run_id), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seed": app.federation.seed,
            "config": app.to_flower(), **describe_choice(choose_data(app.federation)),
            "source": "http-proxy", "override_config": overrides, "override_config_observed": observed,
            "versions": package_versions()}


class DeployedRuns:
    """One :class:`InterceptorService` per run seen by the proxy; callbacks come from the proxy's parser thread."""

    def __init__(self, base: Path, settings: InterceptorConfig, sections: Sections,
                 log: Callable[[str], None] = print, evaluation_runs: Path | None = None) -> None:
        self.base, self.settings, self.sections, self.log = Path(base), settings, sections, log
        self.evaluation_runs = evaluation_runs   # the federation's output-dir (scoring only), when reachable
        self.services: dict[str, InterceptorService] = {}
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()

    def on_run(self, run_id: int, overrides: dict[str, Any], observed: bool = True) -> None:
        key = str(run_id)
        with self._lock:
            if key in self.services or key in self.failed:
                return
            run_dir = self.base / key
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                meta = observed_run_metadata(run_id, overrides, observed, self.sections)
                if self.evaluation_runs is not None:     # the scorer's, never the attacker's
                    meta["evaluation_dir"] = str(self.evaluation_runs / key)
                atomic_write_json(RunFolder(run_dir).config_file, meta)
                service = InterceptorService(run_dir, self.settings, log=self.log)
                service.start()
            except Exception as exc:  # noqa: BLE001 - an attacker-side failure must never reach the relay
                self.failed[key] = f"{exc.__class__.__name__}: {exc}"
                self.log(f"archleak proxy: cannot attack run {key}: {self.failed[key]}")
                return
            self.services[key] = service
            self.log(f"archleak proxy: run {key} seen on the wire ({len(overrides)} override(s)); "
                     f"attacker output in {run_dir}")

    def on_capture(self, run_dir: Path, record: CaptureRecord) -> None:
        if record.run_id not in self.services:
            self.on_run(int(record.run_id), {}, observed=False)   # the proxy started after get-run
        service = self.services.get(record.run_id)
        if service is not None:
            service.submit(record)

    def finish(self, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Mark every run's end and let its workers finish (after-run: attack now); never raises."""
        out: dict[str, Any] = {key: {"error": err} for key, err in self.failed.items()}
        for key, service in self.services.items():
            out[key] = service.finish(timeout_s)
        return out
