"""The interceptor's worker process: ``python -m attacker.interceptor.worker RUN_DIR --settings JSON``.

Started by :class:`~attacker.interceptor.service.InterceptorService`, niced, single-threaded. ``live``: follows
the capture index while the run goes on, at most ``interceptor-queue`` captures behind (the oldest waiting ones
are dropped and counted, never the federation's time); ``after-run``: attacks its shard of the stored captures.
It writes ``interceptor.log``, ``report.txt`` and ``service-<shard>.json`` under ``reconstructions/<threat>/``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from attacker.interceptor.config import InterceptorConfig
from attacker.interceptor.interceptor import Interceptor
from attacker.interceptor.service import END_MARKER, NICE
from fednas.heap import retain_freed_memory
from fednas.run_folder import RunFolder
from fednas.storage import atomic_write_bytes, atomic_write_json


def _follow(interceptor: Interceptor, queue: int, stats: dict[str, Any], poll_s: float,
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
    parser = argparse.ArgumentParser(prog="python -m attacker.interceptor.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--settings", required=True, help="InterceptorConfig as JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shard", type=int, default=0, help="this worker's part (after-run)")
    parser.add_argument("--shards", type=int, default=1, help="how many workers share the captures")
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        os.nice(NICE)
    except OSError:
        pass
    torch.set_num_threads(args.threads)
    retain_freed_memory()
    settings = InterceptorConfig.model_validate_json(args.settings)
    out = RunFolder(Path(args.run_dir)).reconstructions(settings.threat_model)
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


if __name__ == "__main__":
    raise SystemExit(worker_main())
