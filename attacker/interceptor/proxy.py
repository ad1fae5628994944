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
    oversized_exchanges: int = 0        # a body over max_body_bytes: relayed, not parsed
    reset_connections: int = 0          # a client or upstream that reset the connection
    idle_closed: int = 0                # closed after idle_timeout_s without a byte either way
    exchanges: int = 0
    started: float = field(default_factory=time.time)


class HttpMirror:
    """Passive HTTP/1.1 parsing of one connection: each side's parsed events are replayed into the other
    side's h11 state machine, so both stay in step without producing a single byte on the wire."""

    def __init__(self, on_exchange: Callable[[str, str, bytes, int, bytes], None],
                 max_body_bytes: int = 2**62, on_oversized: Callable[[], None] = lambda: None) -> None:
        self.on_exchange, self.max_body_bytes, self.on_oversized = on_exchange, max_body_bytes, on_oversized
        self.oversized = False
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
                self._keep(self.req_body, event.data)
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
                self._keep(self.res_body, event.data)
                self.server_view.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.server_view.send(h11.EndOfMessage())
                self._finish()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _keep(self, body: bytearray, data: bytes) -> None:
        """Bodies are kept up to ``max_body_bytes``; beyond, the exchange is followed (h11 stays in step) but its
        bodies are dropped and it is not decoded."""
        if not self.oversized and len(self.req_body) + len(self.res_body) + len(data) > self.max_body_bytes:
            self.oversized = True
            self.req_body, self.res_body = bytearray(), bytearray()
        if not self.oversized:
            body += data

    def _finish(self) -> None:
        assert self.request is not None
        if not self.oversized:
            self.on_exchange(self.request.method.decode(), self.request.target.decode(), bytes(self.req_body),
                             self.status, bytes(self.res_body))
        else:
            self.on_oversized()
        self.request, self.req_body, self.res_body, self.status = None, bytearray(), bytearray(), 0
        self.oversized = False
        self.request_done = False
        if self.server_view.our_state is h11.DONE and self.server_view.their_state is h11.DONE:
            self.server_view.start_next_cycle()
            self.client_view.start_next_cycle()


class Parser:
    """The worker thread: per-connection mirrors fed from a bounded queue of byte copies."""

    def __init__(self, observer: WireObserver, stats: ProxyStats, log: Callable[[str], None],
                 max_queue: int, max_body_bytes: int = 2**62) -> None:
        self.observer, self.stats, self.log, self.max_body_bytes = observer, stats, log, max_body_bytes
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

    def _oversized(self) -> None:
        self.stats.oversized_exchanges += 1

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            conn, direction, data = item
            with self.lock:
                if conn not in self.mirrors:
                    self.mirrors[conn] = HttpMirror(self._exchange, self.max_body_bytes, self._oversized)
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


@dataclass
class _Link:
    """One client connection and, once opened, its upstream connection."""

    conn: int
    writers: list[asyncio.StreamWriter]
    active: float = field(default_factory=time.monotonic)
    reset: bool = False

    def close(self) -> None:
        for w in self.writers:
            if not w.is_closing():
                w.close()


class InterceptProxy:
    """``listen`` → ``upstream`` relay; captures go to ``<captures>/<run-id>/captures``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], captures: Path,
                 attacker: DeployedRuns | None = None, log: Callable[[str], None] = print,
                 max_queue: int = 4096, max_cache_bytes: int = 512 * 2**20, max_body_bytes: int = 256 * 2**20,
                 idle_timeout_s: float = 600.0, max_pending: int = 4096) -> None:
        self.listen, self.upstream, self.captures, self.log = listen, upstream, Path(captures), log
        self.attacker, self.idle_timeout_s = attacker, idle_timeout_s
        self.stats = ProxyStats()
        self.observer = WireObserver(self.captures, max_cache_bytes, log=log,
                                     on_capture=attacker.on_capture if attacker else None,
                                     on_run=attacker.on_run if attacker else None, max_pending=max_pending)
        self.parser = Parser(self.observer, self.stats, log, max_queue, max_body_bytes)
        self._ids = itertools.count(1)
        self._tls_warned = False
        self._open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, direction: str,
                    first: bytes = b"", parse: bool = True) -> None:
        """Relay one direction until its source ends, then pass the half-close on (the other direction may
        still be answering); a reset ends the whole connection."""
        data = first
        try:
            while True:
                if data:
                    link.active = time.monotonic()
                    dst.write(data)
                    await dst.drain()
                    if direction == "up":
                        self.stats.bytes_up += len(data)
                    else:
                        self.stats.bytes_down += len(data)
                    if parse:
                        self.parser.offer(link.conn, direction, data)
                data = await src.read(READ_SIZE)
                if not data:
                    break
            if dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            link.reset = True
            link.close()

    async def _watch(self, link: _Link) -> None:
        """Close a connection that carried no byte either way for ``idle_timeout_s``."""
        while (left := link.active + self.idle_timeout_s - time.monotonic()) > 0:
            await asyncio.sleep(left)
        self.stats.idle_closed += 1
        link.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(next(self._ids), [writer])
        self.stats.connections += 1
        self._open.add(writer)
        watchdog = asyncio.create_task(self._watch(link))
        try:
            await self._relay(reader, writer, link)
        finally:
            watchdog.cancel()
            link.close()
            if link.reset:
                self.stats.reset_connections += 1
            self.parser.offer(link.conn, "close", b"")
            self._open.difference_update(link.writers)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        # HTTP and TLS clients speak first: the upstream connection opens once the client has (a silent client
        # holds nothing upstream, and is closed by the watchdog)
        try:
            first = await reader.read(READ_SIZE)
        except OSError:
            link.reset = True
            return
        if not first:
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            self.log(f"archleak proxy: upstream {self.upstream[0]}:{self.upstream[1]} unreachable: {exc}")
            return
        link.writers.append(up_writer)
        self._open.add(up_writer)
        tls = first[0] == TLS_HANDSHAKE
        if tls:
            self.stats.tls_connections += 1
            if not self._tls_warned:
                self.log(f"archleak proxy: connection {link.conn} is TLS: encrypted, it cannot be inspected; "
                         "relaying its ciphertext only")
                self._tls_warned = True
        await asyncio.gather(self._pump(reader, up_writer, link, "up", first, parse=not tls),
                             self._pump(up_reader, writer, link, "down", parse=not tls))

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
        # TLS is judged per connection: the run is uninspectable only when TLS carried everything
        inspectable = self.stats.tls_connections == 0 or self.stats.exchanges > 0
        out = {"proxy": dict(self.stats.__dict__), "wire": self.observer.summary(),
               "inspectable": inspectable, "attacks": attacks or {}}
        self.captures.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.captures / "proxy.json", out)
        return out


def parse_address(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or "\x00" in host:
        raise ValueError(f"address {value!r} must be HOST:PORT (or :PORT) with a port from 0 to 65535")
    return (host or default_host).strip("[]"), int(port)


def summary_line(report: dict[str, Any]) -> str:
    proxy, wire = report["proxy"], report["wire"]
    tls = proxy["tls_connections"]
    verdict = ("; TLS: traffic could not be inspected" if not report["inspectable"]
               else f"; {tls} TLS connection(s) relayed uninspected" if tls else "")
    return (f"archleak proxy: {proxy['connections']} connections ({proxy['tls_connections']} TLS), "
            f"{proxy['exchanges']} HTTP exchanges, {wire['captures']} captures, "
            f"{wire['undecodable']} undecodable bodies, {wire['unknown_paths']} unknown paths, "
            f"{proxy['dropped_chunks']} dropped chunks{verdict}")

