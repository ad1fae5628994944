"""The on-path proxy on loopback: byte-for-byte relaying, robustness to bad traffic, TLS pass-through."""

import asyncio
import json
import ssl

import pytest

from attacker.interceptor.proxy import InterceptProxy, parse_address
from simulations.certs import generate_certificates


async def echo_server(tls: ssl.SSLContext | None = None) -> tuple[asyncio.base_events.Server, int, list[bytes]]:
    """A tiny HTTP/1.1 upstream: answers every request with a body that echoes what it received."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append(head + body)
                reply = b"echo:" + body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1], seen


async def exchange(port: int, raw: bytes, tls: ssl.SSLContext | None = None, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    writer.write(raw)
    await writer.drain()
    data = b""
    if read:
        data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def with_proxy(tmp_path, scenario, tls: ssl.SSLContext | None = None):
    server, port, seen = await echo_server(tls)
    proxy = InterceptProxy(("127.0.0.1", 0), ("127.0.0.1", port), tmp_path / "captures", log=lambda _: None)
    await proxy.start()
    proxy_port = proxy.server.sockets[0].getsockname()[1]
    try:
        result = await scenario(proxy_port, port)
    finally:
        report = await proxy.stop()
        server.close()
    return result, report, seen


def test_bad_traffic_is_forwarded_untouched_counted_and_the_proxy_stays_up(tmp_path):
    requests = [post("/v1/fleet/pull-messages", b"\xff\x00not protobuf"),   # garbage body, known endpoint
                post("/v1/fleet/push-object", b"\x0a\xff\xff"),              # truncated protobuf
                post("/no/such/endpoint", b"hello"),                         # unknown path
                post("/v1/fleet/get-run", b"")]

    async def scenario(proxy_port, direct_port):
        via_proxy = [await exchange(proxy_port, r) for r in requests]
        direct = [await exchange(direct_port, r) for r in requests]
        # a request cut off mid-body, then the connection closed: relayed, counted, and the proxy still answers
        await exchange(proxy_port, post("/v1/fleet/push-messages", b"x" * 100)[:-40], read=False)
        await asyncio.sleep(0.2)
        after = await exchange(proxy_port, post("/v1/fleet/send-node-heartbeat", b"ok"))
        return via_proxy, direct, after

    (via_proxy, direct, after), report, seen = asyncio.run(with_proxy(tmp_path, scenario))
    assert via_proxy == direct and after == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\necho:ok"
    assert seen[:4] == requests and seen[4:8] == requests     # the upstream got exactly the same bytes
    wire = report["wire"]
    assert wire["undecodable"] == 2 and wire["unknown_paths"] == 1 and wire["captures"] == 0
    assert report["proxy"]["truncated_exchanges"] == 1 and report["proxy"]["exchanges"] == 5
    assert json.loads((tmp_path / "captures" / "proxy.json").read_text())["wire"]["undecodable"] == 2


def test_non_http_bytes_are_relayed_and_parsing_stops_for_that_connection(tmp_path):
    junk = b"\x00\x01 this is not HTTP at all\r\n\r\n"

    async def scenario(proxy_port, direct_port):
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(junk)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        return await exchange(proxy_port, post("/v1/fleet/get-fab", b"z"))

    answer, report, _seen = asyncio.run(with_proxy(tmp_path, scenario))
    assert answer.endswith(b"echo:z") and report["proxy"]["unparsable_connections"] == 1


def test_tls_is_relayed_as_ciphertext_and_reported_as_not_inspectable(tmp_path):
    paths = generate_certificates(tmp_path / "certs")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(paths["cert"], paths["key"])
    client_ctx = ssl.create_default_context(cafile=str(paths["ca"]))

    async def scenario(proxy_port, direct_port):
        # the client verifies the SuperLink's certificate end to end, through the proxy (SAN 127.0.0.1)
        return await exchange(proxy_port, post("/v1/fleet/pull-messages", b"secret"), tls=client_ctx)

    answer, report, seen = asyncio.run(with_proxy(tmp_path, scenario, tls=server_ctx))
    assert answer.endswith(b"echo:secret") and seen == [post("/v1/fleet/pull-messages", b"secret")]
    assert report["proxy"]["tls_connections"] == 1 and report["inspectable"] is False
    assert report["proxy"]["exchanges"] == 0 and report["wire"]["captures"] == 0


@pytest.mark.parametrize(("value", "expected"), [(":9099", ("127.0.0.1", 9099)),
                                                 ("0.0.0.0:80", ("0.0.0.0", 80)),
                                                 ("superlink:8000", ("superlink", 8000))])
def test_parse_address(value, expected):
    assert parse_address(value) == expected


def test_parse_address_rejects_a_missing_port():
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("superlink")
