"""The on-path interceptor for deployments: a transparent TCP relay with passive HTTP/1.1 parsing.

Why this design: every byte is relayed as it arrives, unchanged (asyncio streams), and a *copy* is parsed
off the forwarding path by h11 (python-hyper's HTTP/1.1 state machine, already beside flwr). A
re-originating proxy (aiohttp, mitmproxy) would rewrite connections, and mitmproxy 11 would downgrade
packages flwr 1.42 depends on (cryptography < 45, h11 < 0.15). Raw relaying also lets TLS pass: the proxy
then sees ciphertext only, says so, and the federation still completes.

Nothing on the parsing side can slow or break forwarding: copies go through a bounded queue to a worker
thread; when it is full, that connection's parsing stops and the bytes are counted as dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from attacker.interceptor.deployed import DeployedRuns
from attacker.wire.fleet import WireObserver
from fednas.storage import atomic_write_json

TLS_HANDSHAKE = 0x16
READ_SIZE = 2**20   # relay in up-to-1 MiB reads: fewer wake-ups for array chunks


@dataclass
class ProxyStats:
    connections: int = 0
    tls_connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dropped_chunks: int = 0
    unparsable_connections: int = 0
    truncated_exchanges: int = 0
    exchanges: int = 0
    started: float = field(default_factory=time.time)


class HttpMirror:
    """Passive HTTP/1.1 parsing of one connection: each side's parsed events are replayed into the other
    side's h11 state machine, so both stay in step without producing a single byte on the wire."""

    def __init__(self, on_exchange: Callable[[str, str, bytes, int, bytes], None]) -> None:
        self.on_exchange = on_exchange
        self.server_view = h11.Connection(h11.SERVER)   # parses what the client sends
        self.client_view = h11.Connection(h11.CLIENT)   # parses what the server sends
        self.request: h11.Request | None = None
        self.req_body = bytearray()
        self.res_body = bytearray()
        self.status = 0
        self.pending_down = bytearray()
        self.request_done = False

    def up(self, data: bytes) -> None:
        self.server_view.receive_data(data)
        while (event := self.server_view.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Request):
                self.request = event
                self.client_view.send(h11.Request(method=event.method, target=event.target, headers=event.headers))
            elif isinstance(event, h11.Data):
                self.req_body += event.data
                self.client_view.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.client_view.send(h11.EndOfMessage())
                self.request_done = True
                if self.pending_down:
                    data, self.pending_down = bytes(self.pending_down), bytearray()
                    self.down(data)
            elif isinstance(event, h11.ConnectionClosed):
                return

    def down(self, data: bytes) -> None:
        if not self.request_done:          # a response can start before the request is fully parsed
            self.pending_down += data
            return
        self.client_view.receive_data(data)
        while (event := self.client_view.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.server_view.send(h11.Response(status_code=event.status_code, headers=event.headers))
            elif isinstance(event, h11.Data):
                self.res_body += event.data
                self.server_view.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.server_view.send(h11.EndOfMessage())
                self._finish()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _finish(self) -> None:
        assert self.request is not None
        self.on_exchange(self.request.method.decode(), self.request.target.decode(), bytes(self.req_body),
                         self.status, bytes(self.res_body))
        self.request, self.req_body, self.res_body, self.status = None, bytearray(), bytearray(), 0
        self.request_done = False
        if self.server_view.our_state is h11.DONE and self.server_view.their_state is h11.DONE:
            self.server_view.start_next_cycle()
            self.client_view.start_next_cycle()


class Parser:
    """The worker thread: per-connection mirrors fed from a bounded queue of byte copies."""

    def __init__(self, observer: WireObserver, stats: ProxyStats, log: Callable[[str], None],
                 max_queue: int) -> None:
        self.observer, self.stats, self.log = observer, stats, log
        self.queue: queue.Queue[tuple[int, str, bytes] | None] = queue.Queue(max_queue)
        self.mirrors: dict[int, HttpMirror | None] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="archleak-proxy-parser", daemon=True)
        self.thread.start()

    def offer(self, conn: int, direction: str, data: bytes) -> None:
        """Called on the forwarding path: never blocks."""
        try:
            self.queue.put_nowait((conn, direction, data))
        except queue.Full:
            self.stats.dropped_chunks += 1
            self.queue_broken(conn)

    def queue_broken(self, conn: int) -> None:
        with self.lock:
            if self.mirrors.get(conn) is not None:
                self.stats.unparsable_connections += 1
            self.mirrors[conn] = None

    def _exchange(self, method: str, path: str, req: bytes, status: int, res: bytes) -> None:
        self.stats.exchanges += 1
        self.observer.observe(method, path, req, status, res)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            conn, direction, data = item
            with self.lock:
                if conn not in self.mirrors:
                    self.mirrors[conn] = HttpMirror(self._exchange)
                mirror = self.mirrors[conn]
            if mirror is None or direction == "close":
                if direction == "close":
                    with self.lock:
                        self.mirrors.pop(conn, None)
                    if mirror is not None and mirror.request is not None:
                        self.stats.truncated_exchanges += 1   # closed mid-exchange: nothing to rebuild
                continue
            try:
                (mirror.up if direction == "up" else mirror.down)(data)
            except (h11.ProtocolError, AssertionError) as exc:
                self.log(f"archleak proxy: connection {conn} is not HTTP/1.1 we can follow ({exc}); relaying only")
                self.queue_broken(conn)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(30)


class InterceptProxy:
    """``listen`` → ``upstream`` relay; captures go to ``<captures>/<run-id>/captures``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], captures: Path,
                 attacker: DeployedRuns | None = None, log: Callable[[str], None] = print,
                 max_queue: int = 4096, max_cache_bytes: int = 512 * 2**20) -> None:
        self.listen, self.upstream, self.captures, self.log = listen, upstream, Path(captures), log
        self.attacker = attacker
        self.stats = ProxyStats()
        self.observer = WireObserver(self.captures, max_cache_bytes, log=log,
                                     on_capture=attacker.on_capture if attacker else None,
                                     on_run=attacker.on_run if attacker else None)
        self.parser = Parser(self.observer, self.stats, log, max_queue)
        self._ids = itertools.count(1)
        self._tls_warned = False
        self._open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: int, direction: str,
                    first: bytes = b"", parse: bool = True) -> None:
        data = first
        try:
            while True:
                if data:
                    dst.write(data)
                    await dst.drain()
                    if direction == "up":
                        self.stats.bytes_up += len(data)
                    else:
                        self.stats.bytes_down += len(data)
                    if parse:
                        self.parser.offer(conn, direction, data)
                data = await src.read(READ_SIZE)
                if not data:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                dst.close()
            except RuntimeError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(self._ids)
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            self.log(f"archleak proxy: upstream {self.upstream} unreachable: {exc}")
            writer.close()
            return
        self._open.update((writer, up_writer))
        first = await reader.read(READ_SIZE)
        tls = bool(first) and first[0] == TLS_HANDSHAKE
        if tls:
            self.stats.tls_connections += 1
            if not self._tls_warned:
                self.log("archleak proxy: TLS between SuperNodes and SuperLink: the traffic is encrypted and "
                         "cannot be inspected; relaying ciphertext only (no captures)")
                self._tls_warned = True
        await asyncio.gather(self._pump(reader, up_writer, conn, "up", first, parse=not tls),
                             self._pump(up_reader, writer, conn, "down", parse=not tls))
        self.parser.offer(conn, "close", b"")
        self._open.difference_update((writer, up_writer))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, *self.listen)
        self.log(f"archleak proxy: listening on {self.listen[0]}:{self.listen[1]} -> "
                 f"{self.upstream[0]}:{self.upstream[1]}; captures under {self.captures}")

    async def stop(self) -> dict[str, Any]:
        """Stop listening, finish parsing, then let the attacker finish its runs (after-run attacks now)."""
        if self.server is not None:
            self.server.close()
        for w in list(self._open):
            w.close()
        await asyncio.to_thread(self.parser.close)
        attacks = await asyncio.to_thread(self.attacker.finish) if self.attacker else {}
        return self.report(attacks)

    def report(self, attacks: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {"proxy": dict(self.stats.__dict__), "wire": self.observer.summary(),
               "inspectable": self.stats.tls_connections == 0, "attacks": attacks or {}}
        self.captures.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.captures / "proxy.json", out)
        return out


def parse_address(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {value!r} must be HOST:PORT (or :PORT)")
    return (host or default_host).strip("[]"), int(port)


def summary_line(report: dict[str, Any]) -> str:
    proxy, wire = report["proxy"], report["wire"]
    verdict = "" if report["inspectable"] else "; TLS: traffic could not be inspected"
    return (f"archleak proxy: {proxy['connections']} connections ({proxy['tls_connections']} TLS), "
            f"{proxy['exchanges']} HTTP exchanges, {wire['captures']} captures, "
            f"{wire['undecodable']} undecodable bodies, {wire['unknown_paths']} unknown paths, "
            f"{proxy['dropped_chunks']} dropped chunks{verdict}")

