"""The prediction API on a real server stack: FastAPI under uvicorn (``archleak serve RUN``).

Endpoints (HTTP/1.1, JSON or .npy bodies, never pickle):
  GET  /v1/info      what a client may know: dataset, classes, the input shape and dtype
  POST /v1/predict   body: a uint8 [N, C, H, W] array as ``application/x-npy`` (or JSON ``{"images": ...}``);
                     answer: float32 posteriors [N, K] in the same format as the request

Every request gets an answer that says what was wrong (JSON ``{"error": ...}``): 400 for a malformed body, 408 for
a body that does not arrive within ``body_timeout_s``, 413 for a body or a batch over the limits (counted as the
bytes arrive, whatever ``Content-Length`` claims), 415 for another content type, 500 when the model yields
non-finite posteriors or fails, 503 beyond ``max_connections``. A connection that sends nothing for
``idle_timeout_s`` between requests is closed. Predictions run on worker threads, one chunk of ``chunk`` images at
a time in arrival order, so a large batch delays a small one by at most a chunk; the answers do not depend on
concurrency (one chunk at a time through the model).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from fednas.serve import NPY, BlackBox, check_images, decode_npy, encode_npy

KNOWN = "known: GET /v1/info, POST /v1/predict"


@dataclass(frozen=True)
class ServeLimits:
    max_body: int = 64 * 1024 * 1024          # bytes of an .npy body
    max_json_body: int = 8 * 1024 * 1024      # bytes of a JSON body (parsed into Python objects: costlier)
    max_images: int = 20_000                  # images per request
    body_timeout_s: float = 30.0              # to receive a whole body
    idle_timeout_s: float = 15.0              # silence before a request (or between two) closes the connection
    max_connections: int = 64                 # beyond: 503
    chunk: int = 64                           # images per turn through the model


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FairLock:
    """A lock handed out in arrival order (``threading.Lock`` may let one thread take it again and again)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def hold(self) -> Iterator[None]:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            self._cond.wait_for(lambda: self._queue[0] is ticket)
        try:
            yield
        finally:
            with self._cond:
                self._queue.popleft()
                self._cond.notify_all()


class Predictor:
    """The black box behind the API: one chunk at a time, in arrival order; counts the images served."""

    def __init__(self, target: BlackBox, chunk: int) -> None:
        self.target, self.chunk = target, chunk
        self.turns = FairLock()
        self.served = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(images), self.chunk):
            with self.turns.hold():
                parts.append(self.target.predict(images[start:start + self.chunk]))
        k = int(self.target.info()["num_classes"])
        posteriors = np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.float32)
        bad = int((~np.isfinite(posteriors)).any(axis=1).sum())
        if bad:
            raise RequestError(500, f"the model produced non-finite posteriors for {bad} of {len(images)} images")
        self.served += len(images)
        return posteriors.astype(np.float32)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (a lying or missing Content-Length changes
    nothing), and with 408 if it does not arrive within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared)} bytes is over the limit of {limit}")

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise RequestError(408, f"the body did not arrive within {timeout:g} s") from None


def json_images(body: bytes) -> np.ndarray:
    try:
        images = json.loads(body)["images"]
        arr = np.asarray(images)
    except RecursionError:
        raise ValueError("JSON nested too deeply; expected {\"images\": [N][C][H][W] integers}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise ValueError('expected a JSON body {"images": [[[[...]]]]} or an application/x-npy array') from None
    if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("JSON images must be integers in [0, 255]")
    return arr.astype(np.uint8)


async def predict_request(request: Request, predictor: Predictor, limits: ServeLimits) -> Response:
    kind = media_type(request)
    if kind not in (NPY, "application/json", ""):
        raise RequestError(415, f"Content-Type {kind!r} is not supported; send {NPY} or application/json")
    as_npy = kind == NPY
    body = await read_body(request, limits.max_body if as_npy else limits.max_json_body, limits.body_timeout_s)
    try:
        images = check_images(decode_npy(body) if as_npy else json_images(body), predictor.target.info())
    except (ValueError, MemoryError) as exc:
        raise RequestError(400, str(exc) or type(exc).__name__) from None
    if len(images) > limits.max_images:
        raise RequestError(413, f"{len(images)} images are over the limit of {limits.max_images} per request")
    posteriors = await run_in_threadpool(predictor.predict, images)
    if as_npy:
        return Response(encode_npy(posteriors), media_type=NPY)
    return JSONResponse({"posteriors": posteriors.tolist()})


def create_app(target: BlackBox, limits: ServeLimits = ServeLimits()) -> tuple[FastAPI, Predictor]:
    api = FastAPI(title="archleak prediction API", docs_url=None, redoc_url=None, openapi_url=None)
    predictor = Predictor(target, limits.chunk)

    @api.get("/v1/info")
    async def info() -> JSONResponse:
        return JSONResponse(target.info())

    @api.post("/v1/predict")
    async def predict(request: Request) -> Response:
        try:
            return await predict_request(request, predictor, limits)
        except RequestError as exc:
            return error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - the service stays up and says what happened, in one line
            print(f"archleak serve: {type(exc).__name__}: {exc}", file=sys.stderr)
            return error(500, f"{type(exc).__name__}: {exc}")

    @api.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error(404, f"unknown path {request.url.path!r}; {KNOWN}")

    @api.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error(405, f"{request.method} is not allowed on {request.url.path!r}; {KNOWN}")

    return api, predictor


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class IdleTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, also closing a connection that stays silent outside a request (uvicorn alone
    times out only the wait after a response, not a client that connects and sends nothing or half a header),
    and answering a client that half-closes after its request."""

    idle_timeout_s = ServeLimits.idle_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._arm()
        super().data_received(data)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that half-closes after its request still gets the answer (uvicorn alone drops it); a body cut
        short by the half-close gets a 400."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None                                   # idle: close, as before
        cycle.keep_alive = False
        if self.conn.their_state is h11.SEND_BODY:
            cycle.disconnected = True                     # the app stops waiting for the rest of the body
            cycle.message_event.set()
            self.conn.receive_data(b"")
            self.handle_events()                          # h11: incomplete body -> uvicorn answers 400
        return True                                       # keep our half open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(self.idle_timeout_s, self._expired)

    def _expired(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy:                                 # the app is reading or answering: it has its own timeouts
            self._arm()
        elif not self.transport.is_closing():
            self.transport.close()


class PredictionService:
    """A started-on-demand uvicorn server on a socket bound at construction (port 0: a free one, see ``url``)."""

    def __init__(self, target: BlackBox, host: str = "127.0.0.1", port: int = 0,
                 limits: ServeLimits = ServeLimits()) -> None:
        api, self.predictor = create_app(target, limits)
        protocol = type("Protocol", (IdleTimeoutProtocol,), {"idle_timeout_s": limits.idle_timeout_s})
        config = uvicorn.Config(api, http=protocol, lifespan="off", log_level="warning", access_log=False,
                                limit_concurrency=limits.max_connections, timeout_keep_alive=int(limits.idle_timeout_s)
                                or 1, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except (OSError, OverflowError) as exc:
            self.socket.close()
            raise ValueError(f"cannot listen on {host}:{port}: {exc}") from None
        self.socket.listen(128)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def served(self) -> int:
        return self.predictor.served

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (main thread) or :meth:`shutdown`."""
        self.server.run(sockets=[self.socket])

    def start(self) -> PredictionService:
        """Serve on a background thread; returns once the server accepts connections."""
        self.thread = threading.Thread(target=self.serve_forever, name="archleak-serve", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.01)
        return self

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.socket.close()


def start_server(target: BlackBox, host: str = "127.0.0.1", port: int = 0,
                 limits: ServeLimits = ServeLimits()) -> PredictionService:
    """Serve ``target`` on a background thread (see ``service.url``; stop with ``service.shutdown()``)."""
    return PredictionService(target, host, port, limits).start()
