"""The prediction API under hostile requests (the hostile-input round's §4): every request gets an answer that
says what was wrong, the limits hold whatever the headers claim, idle connections are closed, a large batch does
not hold up a small one, and the service stays up throughout."""

import json
import socket
import threading
import time

import numpy as np
import pytest

from fednas.http_server import ServeLimits, start_server
from fednas.serve import NPY, encode_npy

INFO = {"num_classes": 3, "channels": 1, "height": 4, "width": 4, "dtype": "uint8", "model": "fake"}
LIMITS = ServeLimits(max_body=64 * 1024, max_json_body=512 * 1024, max_images=500, body_timeout_s=1.0,
                     idle_timeout_s=1.0, chunk=8)


class FakeBox:
    """Posteriors from pixel means (numpy only); ``delay`` seconds per call, NaN when ``broken``."""

    def __init__(self, delay: float = 0.0, broken: bool = False) -> None:
        self.delay, self.broken, self.calls = delay, broken, []

    def info(self):
        return dict(INFO)

    def predict(self, images):
        self.calls.append(len(images))
        time.sleep(self.delay)
        mean = images.reshape(len(images), -1).mean(1, keepdims=True) / 255.0
        logits = np.concatenate([mean, 1 - mean, np.zeros_like(mean)], 1)
        out = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return np.full_like(out, np.nan) if self.broken else out.astype(np.float32)


@pytest.fixture
def service():
    box = FakeBox()
    server = start_server(box, limits=LIMITS)
    yield server, box
    server.shutdown()


def images(n):
    return np.random.default_rng(n).integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)


def raw(server, data: bytes, half_close: bool = True, timeout: float = 10.0) -> bytes:
    host, port = server.socket.getsockname()[:2]
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:                     # the server may answer and close before the client has sent everything
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def post(body: bytes, kind: str = NPY, extra: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {size}\r\n{extra}\r\n").encode() + body


def answer(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


def still_up(server) -> bool:
    status, body = answer(raw(server, b"GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    return status == 200 and body["model"] == "fake"


def npy_header(shape, descr="|u1") -> bytes:
    h = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    h += " " * (63 - (len(h) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode()


@pytest.mark.parametrize(("request_bytes", "status", "message"), [
    (post(b""), 400, "not a .npy array"),
    (post(npy_header((10**9, 1, 4, 4)) + b"x" * 10), 400, "declares"),
    (post(b"\x00" * 300), 400, "not a .npy array"),
    (post(npy_header((2,), "|O") + b"x" * 16), 400, "objects is refused"),
    (post(b"[" * 100_000 + b"]" * 100_000, "application/json"), 400, "nested too deeply"),
    (post(encode_npy(images(2)), "text/plain"), 415, "application/x-npy"),
    (post(encode_npy(images(2)), "application/x-npyjunk"), 415, "not supported"),
    (post(encode_npy(images(501))), 413, "over the limit of 500"),
    (post(b"\0" * 70_000), 413, "over the limit"),
])
def test_malformed_requests_get_an_answer_and_the_service_stays_up(service, request_bytes, status, message):
    server, _ = service
    got, body = answer(raw(server, request_bytes))
    assert got == status and message in body["error"]
    assert "pickle" not in body["error"]
    assert still_up(server)


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_invalid_content_length_is_refused_before_any_body_is_read(service, length):
    server, _ = service
    request = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {NPY}\r\nContent-Length: {length}\r\n\r\n"
               ).encode() + b"\0" * 1000
    assert raw(server, request).startswith(b"HTTP/1.1 400")     # refused at the header: no body is read
    assert still_up(server)


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(service):
    server, _ = service
    chunk = b"\0" * 16_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    request = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {NPY}\r\n"
               "Transfer-Encoding: chunked\r\n\r\n").encode() + body
    status, reply = answer(raw(server, request))
    assert status == 413 and "over the limit of 65536 bytes" in reply["error"]


def test_a_body_that_never_arrives_times_out_with_408(service):
    server, _ = service
    status, reply = answer(raw(server, post(b"\x93NUMPY", length=1000), half_close=False))
    assert status == 408 and "did not arrive" in reply["error"]


def test_a_silent_connection_is_closed(service):
    server, _ = service
    host, port = server.socket.getsockname()[:2]
    with socket.create_connection((host, port), timeout=20) as s:
        assert s.recv(1) == b"", "the server closes a connection that sends nothing"
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")     # half a header, then silence
        assert s.recv(1024) == b""


def test_non_finite_posteriors_are_an_error_in_strict_json():
    server = start_server(FakeBox(broken=True), limits=LIMITS)
    try:
        response = raw(server, post(json.dumps({"images": images(2).tolist()}).encode(), "application/json"))
    finally:
        server.shutdown()
    head, _, body = response.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == 500
    reply = json.loads(body, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert reply["error"] == "the model produced non-finite posteriors for 2 of 2 images"


def test_a_large_batch_does_not_hold_up_a_small_one():
    box = FakeBox(delay=0.05)
    server = start_server(box, limits=LIMITS)
    done = {}

    def send(name, n):
        status, _ = answer(raw(server, post(encode_npy(images(n)))))
        done[name] = (status, time.monotonic())

    try:
        big = threading.Thread(target=send, args=("big", 400))       # 50 chunks of 8
        big.start()
        while not box.calls:
            time.sleep(0.005)
        send("small", 2)
        big.join()
    finally:
        server.shutdown()
    assert done["big"][0] == done["small"][0] == 200
    assert done["small"][1] < done["big"][1], "the small request waited for the whole large one"
    assert box.calls.index(2) < len(box.calls) - 1
