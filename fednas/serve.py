"""The searched model behind an HTTP prediction API, as an MLaaS provider runs it (``archleak serve RUN``).

A served model answers posterior queries: raw uint8 images ``[N, C, H, W]`` in (what a client of a prediction API
uploads; normalisation is the service's business), float32 posteriors ``[N, K]`` out. :class:`ModelBlackBox`
answers them in process; :class:`PredictionServer` puts one on HTTP. A membership attacker sees the same
:class:`BlackBox` interface either way (``attacker.membership.blackbox.HttpBlackBox`` is its HTTP client).

Endpoints (HTTP/1.1, JSON or .npy bodies, never pickle):
  GET  /v1/info      what a client may know: dataset, classes, the input shape and dtype
  POST /v1/predict   body: a uint8 [N, C, H, W] array as ``application/x-npy`` (or JSON ``{"images": ...}``);
                     answer: float32 posteriors [N, K] in the same format as the request
Bad requests get 400 with a message that says what was expected; a body over the limit gets 413.

The standard library's threading HTTP server is enough here (one model, small JSON/npy bodies, no
extra dependency); predictions are serialised by a lock, so answers do not depend on concurrency.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np
import torch

MAX_BODY = 64 * 1024 * 1024
NPY = "application/x-npy"
DEFAULT_BATCH = 256


class BlackBox(Protocol):
    """What a membership attacker may use: the service's public description and its answers."""

    def info(self) -> dict[str, Any]: ...

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def check_images(images: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """A uint8 [N, C, H, W] batch of the shape the service takes, or ValueError saying what is wrong."""
    arr = np.asarray(images)
    shape = (info["channels"], info["height"], info["width"])
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
        raise ValueError(f"images must be uint8 [N, {shape[0]}, {shape[1]}, {shape[2]}]; "
                         f"got {arr.dtype} {list(arr.shape)}")
    return arr


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """An array from .npy bytes; never unpickles (object arrays are refused)."""
    array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return array


@dataclass
class ModelBlackBox:
    """A classifier answering posterior queries in this process (eval mode, no gradients)."""

    forward: Callable[[torch.Tensor], torch.Tensor]  # float images in [0, 1] -> logits
    description: dict[str, Any]
    device: torch.device
    batch_size: int = DEFAULT_BATCH

    def info(self) -> dict[str, Any]:
        return dict(self.description)

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        arr = check_images(images, self.description)
        out = []
        for start in range(0, len(arr), self.batch_size):
            x = torch.from_numpy(arr[start:start + self.batch_size]).to(self.device, torch.float32) / 255.0
            out.append(torch.softmax(self.forward(x).double(), dim=1).float().cpu().numpy())
        k = int(self.description["num_classes"])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


def model_black_box(model: torch.nn.Module, description: dict[str, Any], device: torch.device,
                    batch_size: int = DEFAULT_BATCH) -> ModelBlackBox:
    model.eval()
    return ModelBlackBox(model, description, device, batch_size)


class PredictionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: BlackBox, max_body: int = MAX_BODY) -> None:
        super().__init__(address, _Handler)
        self.target = target
        self.max_body = max_body
        self.lock = threading.Lock()
        self.served = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: PredictionServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/info":
            self._send(200, json.dumps(self.server.target.info()).encode(), "application/json")
        else:
            self._error(404, f"unknown path {self.path!r}; known: GET /v1/info, POST /v1/predict")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/predict":
            self._error(404, f"unknown path {self.path!r}; known: GET /v1/info, POST /v1/predict")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body:
            self.close_connection = True
            self._error(413, f"body of {length} bytes is over the limit of {self.server.max_body}")
            return
        body = self.rfile.read(length)
        as_npy = self.headers.get("Content-Type", "").startswith(NPY)
        try:
            images = decode_npy(body) if as_npy else _json_images(body)
            images = check_images(images, self.server.target.info())
        except ValueError as exc:
            self._error(400, str(exc))
            return
        with self.server.lock:
            posteriors = self.server.target.predict(images)
            self.server.served += len(images)
        if as_npy:
            self._send(200, encode_npy(posteriors.astype(np.float32)), NPY)
        else:
            self._send(200, json.dumps({"posteriors": posteriors.tolist()}).encode(), "application/json")


def _json_images(body: bytes) -> np.ndarray:
    try:
        images = json.loads(body)["images"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError('expected a JSON body {"images": [[[[...]]]]} or an application/x-npy array') from None
    arr = np.asarray(images)
    if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("JSON images must be integers in [0, 255]")
    return arr.astype(np.uint8)


def start_server(target: BlackBox, host: str = "127.0.0.1", port: int = 0) -> tuple[PredictionServer, threading.Thread]:
    """Serve ``target`` on a background thread; port 0 picks a free one (see ``server.url``)."""
    server = PredictionServer((host, port), target)
    thread = threading.Thread(target=server.serve_forever, name="archleak-serve", daemon=True)
    thread.start()
    return server, thread
