"""``archleak bench deploy``: what the on-path proxy costs.

* Latency: the same HTTP/1.1 POSTs (small and 1 MiB bodies) sent straight to a loopback upstream and through
  :class:`~attacker.interceptor.proxy.InterceptProxy`; the median added time per request.
* Run time: the local launcher with and without the proxy (``capture`` mode: the proxy's own cost; the
  attack's CPU is reported by the interceptor benchmark), at each client count, in one process, same seed.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attacker.interceptor.proxy import InterceptProxy

SIZES = (256, 2**20)


async def _upstream() -> tuple[asyncio.base_events.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _timed_posts(port: int, size: int, count: int) -> list[float]:
    """Keep-alive connection (as the SuperNodes' client uses); seconds per request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"\x00" * size
    request = b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (size, body)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(request)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        times.append(time.perf_counter() - start)
    writer.close()
    return times


async def latency(count: int = 300) -> dict[str, Any]:
    server, port = await _upstream()
    with tempfile.TemporaryDirectory() as tmp:
        proxy = InterceptProxy(("127.0.0.1", 0), ("127.0.0.1", port), Path(tmp), log=lambda _: None)
        await proxy.start()
        via = proxy.server.sockets[0].getsockname()[1]
        out = {}
        for size in SIZES:
            direct = await _timed_posts(port, size, count)
            proxied = await _timed_posts(via, size, count)
            d, p = statistics.median(direct), statistics.median(proxied)
            out[f"{size}B"] = {"direct_ms": 1e3 * d, "proxy_ms": 1e3 * p, "added_ms": 1e3 * (p - d),
                               "ratio": p / d}
        await proxy.stop()
    server.close()
    return out


def run_times(clients: Sequence[int], rounds: int, run_config: dict[str, Any], workdir: Path) -> list[dict]:
    from simulations.deploy import DeployPlan, LocalDeployment

    app_dir = Path(__file__).resolve().parent.parent
    rows = []
    for n in clients:
        row: dict[str, Any] = {"clients": n, "rounds": rounds}
        for label, with_proxy in (("direct", False), ("proxy", True)):
            plan = DeployPlan(clients=n, rounds=rounds, interceptor=with_proxy, attack="capture",
                              workdir=workdir / f"{n}-{label}", app_dir=app_dir, run_config=run_config)
            with LocalDeployment(plan, log=lambda _: None) as d:
                result = d.run()
            if not result["completed"]:
                raise RuntimeError(f"the {label} run with {n} clients failed; see {d.logs}")
            row[f"{label}_s"] = result["wall_s"]
        row["ratio"] = row["proxy_s"] / row["direct_s"]
        rows.append(row)
    return rows
