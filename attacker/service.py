"""Running the interceptor beside a federation without disturbing it.

The tap only writes captures to disk. The attack runs in a separate, niced process
(``python -m attacker.service RUN_DIR``) that reads the capture index:

* ``live``: the worker follows the index while the run goes on. It keeps at most ``interceptor-queue``
  captures waiting; when it falls further behind it drops the oldest waiting captures and counts them
  (they stay on disk: ``archleak reconstruct`` can attack them later). Training never waits for it.
* ``after-run``: the worker starts once the last round has ended and attacks every stored capture.

The server marks the end of the run with ``captures/END``. The worker writes
``reconstructions/<threat-model>/interceptor.log``, ``report.txt`` and ``service.json``; if it crashes, the run still
completes and the exit code is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attacker.capture import CaptureRecord
from attacker.config import InterceptorConfig
from attacker.interceptor import output_dir
from fednas.storage import atomic_write_bytes, atomic_write_json

NICE = 10
END_MARKER = "END"


def _follow(interceptor: Any, queue: int, stats: dict[str, Any], poll_s: float,
            log: Callable[[str], None]) -> None:
    end = interceptor.store.root / END_MARKER
    dropped: set[str] = set()
    while True:
        finished = end.exists()          # read before the index: captures written before END are seen
        waiting = [r for r in interceptor.pending() if r.capture_id not in dropped]
        if len(waiting) > queue:
            for record in waiting[:-queue]:
                dropped.add(record.capture_id)
            log(f"fell behind: dropped {len(waiting) - queue} capture(s) ({len(dropped)} so far)")
            waiting = waiting[-queue:]
        stats["dropped"] = len(dropped)
        if waiting:
            interceptor.process(waiting[: interceptor.settings.attack_batch])
        elif finished:
            return
        else:
            time.sleep(poll_s)


def worker_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attacker.service")
    parser.add_argument("run_dir")
    parser.add_argument("--settings", required=True, help="InterceptorConfig as JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shard", type=int, default=0, help="this worker's part (after-run)")
    parser.add_argument("--shards", type=int, default=1, help="how many workers share the captures")
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    import torch

    from attacker.interceptor import Interceptor, output_dir

    try:
        os.nice(NICE)
    except OSError:
        pass
    torch.set_num_threads(args.threads)
    settings = InterceptorConfig.model_validate_json(args.settings)
    out = output_dir(Path(args.run_dir), settings.threat_model)
    out.mkdir(parents=True, exist_ok=True)
    stats: dict[str, Any] = {"mode": settings.interceptor, "dropped": 0}
    with open(out / "interceptor.log", "a", buffering=1) as logfile:
        def log(line: str) -> None:
            logfile.write(f"{time.strftime('%H:%M:%S')} {line}\n")

        interceptor = Interceptor(Path(args.run_dir), settings, log=log)
        if settings.interceptor == "live":
            _follow(interceptor, settings.interceptor_queue, stats, args.poll, log)
        else:
            interceptor.process(interceptor.pending(), shard=(args.shard, args.shards))
        stats.update(interceptor.stats)
        atomic_write_bytes(out / "report.txt", (interceptor.report() + "\n").encode())
        atomic_write_json(out / f"service-{args.shard}.json", stats)
        log(f"done (part {args.shard + 1} of {args.shards})")
    return 0


class InterceptorService:
    """Starts and stops the worker process; nothing here can block or fail the federation."""

    def __init__(self, run_dir: Path, settings: InterceptorConfig, log: Callable[[str], None] = print) -> None:
        self.run_dir, self.settings, self.log = Path(run_dir), settings, log
        # live shares the machine with training: one worker; after-run: one single-threaded worker per core
        # (the attack's tensors are small: processes scale, threads do not)
        self.shards = 1 if settings.interceptor == "live" else (os.cpu_count() or 1)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.submitted = 0

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for shard in range(self.shards):
            cmd = [sys.executable, "-m", "attacker.service", str(self.run_dir), "--settings",
                   self.settings.model_dump_json(), "--shard", str(shard), "--shards", str(self.shards)]
            errors = open(self.run_dir / "captures" / f"worker-{shard}.stderr", "ab")  # noqa: SIM115 (child's)
            self.workers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors))

    def start(self) -> None:
        (self.run_dir / "captures").mkdir(parents=True, exist_ok=True)
        if self.settings.interceptor == "live":
            self._spawn()

    def submit(self, record: CaptureRecord) -> None:
        """The tap's callback: the capture is already on disk; the worker finds it there."""
        self.submitted += 1

    def finish(self, timeout_s: float = 3600.0) -> dict[str, Any]:
        """Mark the end, let the worker drain (live) or run it (after-run), report; never raises."""
        stats: dict[str, Any] = {"mode": self.settings.interceptor, "submitted": self.submitted}
        try:
            atomic_write_bytes(self.run_dir / "captures" / END_MARKER, b"")
            if self.settings.interceptor == "capture":
                self.log(f"archleak: {self.submitted} captures stored in {self.run_dir / 'captures'}; attack them "
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
        except Exception as exc:  # noqa: BLE001 - reporting must not fail the run either
            stats["error"] = f"{exc.__class__.__name__}: {exc}"
        out = output_dir(self.run_dir, self.settings.threat_model)
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


if __name__ == "__main__":
    raise SystemExit(worker_main())
