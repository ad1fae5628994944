"""Running the interceptor beside a federation without disturbing it.

The tap only writes captures to disk. The attack runs in a separate, niced process
(``python -m attacker.interceptor.worker RUN_DIR``, :mod:`attacker.interceptor.worker`) that reads the capture
index; this module only starts and stops it, so that the ServerApp never imports the attack engines:

* ``live``: the worker follows the index while the run goes on. It keeps at most ``interceptor-queue``
  captures waiting; when it falls further behind it drops the oldest waiting captures and counts them
  (they stay on disk: ``archleak reconstruct`` can attack them later). Training never waits for it.
* ``after-run``: the worker starts once the last round has ended and attacks every stored capture.

The server marks the end of the run with ``captures/END``. The worker writes
``reconstructions/<threat-model>/interceptor.log``, ``report.txt`` and ``service.json``; if it crashes, the run still
completes and the exit code is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attacker.interceptor.config import InterceptorConfig
from attacker.wire.capture import CaptureRecord
from fednas.run_folder import RunFolder
from fednas.storage import atomic_write_bytes, atomic_write_json

NICE = 10
END_MARKER = "END"


class InterceptorService:
    """Starts and stops the worker process; nothing here can block or fail the federation."""

    def __init__(self, run_dir: Path, settings: InterceptorConfig, log: Callable[[str], None] = print) -> None:
        self.run_dir, self.settings, self.log = Path(run_dir), settings, log
        self.captures = RunFolder(self.run_dir).captures
        # live shares the machine with training: one worker; after-run: one single-threaded worker per core
        # (the attack's tensors are small: processes scale, threads do not)
        self.shards = 1 if settings.interceptor == "live" else (os.cpu_count() or 1)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.submitted = 0

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for shard in range(self.shards):
            cmd = [sys.executable, "-m", "attacker.interceptor.worker", str(self.run_dir), "--settings",
                   self.settings.model_dump_json(), "--shard", str(shard), "--shards", str(self.shards)]
            errors = open(self.captures / f"worker-{shard}.stderr", "ab")  # noqa: SIM115 (child's)
            self.workers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors))

    def start(self) -> None:
        self.captures.mkdir(parents=True, exist_ok=True)
        if self.settings.interceptor == "live":
            self._spawn()

    def submit(self, record: CaptureRecord) -> None:
        """The tap's callback: the capture is already on disk; the worker finds it there."""
        self.submitted += 1

    def finish(self, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Mark the end, let the worker drain (live) or run it (after-run), report; never raises."""
        stats: dict[str, Any] = {"mode": self.settings.interceptor, "submitted": self.submitted}
        try:
            atomic_write_bytes(self.captures / END_MARKER, b"")
            if self.settings.interceptor == "capture":
                self.log(f"archleak: {self.submitted} captures stored in {self.captures}; attack them "
                         f"with: archleak reconstruct {self.run_dir}")
                return stats
            if self.settings.interceptor == "after-run":
                self.log("archleak: attacking the stored captures (after-run)")
                self._spawn()
            deadline = time.monotonic() + timeout_s
            codes = []
            for worker in self.workers:
                try:
                    codes.append(worker.wait(max(deadline - time.monotonic(), 0.1)))
                except subprocess.TimeoutExpired:
                    worker.kill()
                    stats["timed_out"] = True
            stats["exit_codes"] = codes
            if len(self.workers) > 1:
                # each worker reported what it saw when it ended; the summary of all of them is written once all
                # have ended (else the last to end may have read the metrics before the others' last lines)
                from attacker.interceptor.interceptor import Interceptor  # the attack's modules: after training

                whole = Interceptor(self.run_dir, self.settings, log=lambda line: None)
                whole.pending()
                atomic_write_bytes(RunFolder(self.run_dir).reconstructions(self.settings.threat_model) / "report.txt",
                                   (whole.report(force=True) + "\n").encode())
        except Exception as exc:  # noqa: BLE001 - reporting must not fail the run either
            stats["error"] = f"{exc.__class__.__name__}: {exc}"
        out = RunFolder(self.run_dir).reconstructions(self.settings.threat_model)
        parts = [json.loads(p.read_text()) for p in sorted(out.glob("service-*.json"))]
        for key in ("attacked", "failed", "not_applicable", "dropped"):
            stats[key] = sum(int(p.get(key, 0)) for p in parts)
        atomic_write_json(out / "service.json", stats)
        report = out / "report.txt"
        if report.exists():
            self.log(f"archleak: ADRA results ({self.settings.threat_model} threat model; gallery: "
                     f"{out / 'index.html'})\n" + report.read_text())
        else:
            self.log(f"archleak: the interceptor produced no report ({stats}); see {out / 'interceptor.log'} "
                     f"and captures/worker.stderr")
        return stats
