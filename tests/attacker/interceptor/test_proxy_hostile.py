"""The on-path proxy under hostile clients (the hostile-input round's §5): half-closing clients get their answer,
resets leak nothing, silent connections are closed, bodies and pending message trees are bounded, one TLS
connection does not make a plaintext session uninspectable, and bad addresses are one-line usage errors."""

import asyncio
import socket
import struct

import pytest
from typer.testing import CliRunner

from attacker.interceptor.proxy import InterceptProxy, summary_line
from attacker.wire.fleet import WireObserver
from simulations.cli import app
from tests.attacker.interceptor.test_proxy import echo_server, exchange, post
from tests.conftest import flat


class Counting:
    """An upstream that answers like ``echo_server`` and counts the connections it holds open."""

    def __init__(self) -> None:
        self.open = 0

    async def start(self) -> int:
        async def handle(reader, writer):
            self.open += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    body = await reader.readexactly(length)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                self.open -= 1
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


async def proxied(tmp_path, upstream_port, **limits):
    proxy = InterceptProxy(("127.0.0.1", 0), ("127.0.0.1", upstream_port), tmp_path / "captures",
                           log=lambda _: None, **limits)
    await proxy.start()
    return proxy, proxy.server.sockets[0].getsockname()[1]


def test_a_client_that_half_closes_gets_the_whole_answer(tmp_path):
    async def scenario():
        server, port, _ = await echo_server()
        proxy, proxy_port = await proxied(tmp_path, port)
        answers = []
        for target in (port, proxy_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
            writer.write(post("/v1/fleet/get-run", b"x" * 100_000))
            writer.write_eof()                                     # as `nc -N` does
            answers.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
        await proxy.stop()
        server.close()
        return answers

    direct, via_proxy = asyncio.run(scenario())
    assert len(direct) > 100_000 and via_proxy == direct


def test_clients_that_reset_leak_no_upstream_connection(tmp_path):
    async def scenario():
        upstream = Counting()
        proxy, proxy_port = await proxied(tmp_path, await upstream.start())
        linger = struct.pack("ii", 1, 0)
        for with_request in (False, True) * 10:
            s = socket.create_connection(("127.0.0.1", proxy_port))
            if with_request:
                s.sendall(post("/v1/fleet/get-run", b"x"))
                await asyncio.sleep(0.02)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()                                              # RST
        for _ in range(100):                                       # closing propagates asynchronously
            if upstream.open == 0:
                break
            await asyncio.sleep(0.05)
        still_open = upstream.open
        report = await proxy.stop()
        upstream.server.close()
        return still_open, report

    still_open, report = asyncio.run(scenario())
    assert still_open == 0, "every upstream connection of a reset client is closed"
    assert report["proxy"]["connections"] == 20 and report["proxy"]["reset_connections"] >= 10


def test_a_silent_connection_is_closed_after_the_idle_timeout(tmp_path):
    async def scenario():
        upstream = Counting()
        proxy, proxy_port = await proxied(tmp_path, await upstream.start(), idle_timeout_s=0.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        closed = await asyncio.wait_for(reader.read(), 10)         # the proxy closes: EOF
        writer.close()
        held = upstream.open
        busy = await exchange(proxy_port, post("/v1/fleet/get-run", b"ok"))   # a live client is unaffected
        report = await proxy.stop()
        upstream.server.close()
        return closed, held, busy, report

    closed, upstream_open, busy, report = asyncio.run(scenario())
    assert closed == b"" and report["proxy"]["idle_closed"] >= 1 and busy.endswith(b"ok")
    assert upstream_open == 0, "a client that never spoke held no upstream connection"


def test_bodies_over_the_limit_are_relayed_but_not_buffered(tmp_path):
    async def scenario():
        server, port, _ = await echo_server()
        proxy, proxy_port = await proxied(tmp_path, port, max_body_bytes=64 * 1024)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(post("/v1/fleet/push-object", b"y" * 1_000_000))
        await writer.drain()
        answer = b""
        while len(answer) < 1_000_000:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not chunk:
                break
            answer += chunk
        writer.close()
        await asyncio.sleep(0.2)
        report = await proxy.stop()
        server.close()
        return answer, report

    answer, report = asyncio.run(scenario())
    assert answer.endswith(b"y" * 1000) and len(answer) > 1_000_000
    assert report["proxy"]["oversized_exchanges"] >= 1


def test_message_trees_whose_objects_never_come_are_bounded(tmp_path):
    from flwr.proto.message_pb2 import ObjectTree

    observer = WireObserver(tmp_path, log=lambda _: None, max_pending=10)
    for i in range(100):
        observer._wait(observer._replies, ObjectTree(object_id=f"{i:064x}"))
    assert observer.summary()["pending_replies"] == 10
    assert observer.stats.incomplete_replies == 90
    assert f"{99:064x}" in observer._replies and f"{0:064x}" not in observer._replies


def test_one_tls_connection_does_not_make_a_plaintext_session_uninspectable(tmp_path):
    async def scenario():
        server, port, _ = await echo_server()
        proxy, proxy_port = await proxied(tmp_path, port)
        await exchange(proxy_port, b"\x16\x03\x01 not really a handshake", read=False)
        answer = await exchange(proxy_port, post("/v1/fleet/get-run", b"plain"))
        await asyncio.sleep(0.2)
        report = await proxy.stop()
        server.close()
        return answer, report

    answer, report = asyncio.run(scenario())
    assert answer.endswith(b"echo:plain")
    assert report["proxy"]["tls_connections"] == 1 and report["inspectable"] is True
    assert "1 TLS connection(s) relayed uninspected" in summary_line(report)


@pytest.mark.parametrize(("listen", "message"), [
    ("127.0.0.1:99999", "port from 0 to 65535"),
    ("garbage", "must be HOST:PORT"),
])
def test_bad_listen_addresses_are_usage_errors(tmp_path, listen, message):
    result = CliRunner().invoke(app, ["intercept", "--listen", listen, "--captures", str(tmp_path)])
    assert result.exit_code == 2 and message in flat(result.output)


def test_a_port_in_use_is_a_usage_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["intercept", "--listen", f"127.0.0.1:{port}", "--captures", str(tmp_path)])
    assert result.exit_code == 2 and "cannot listen on" in flat(result.output)
