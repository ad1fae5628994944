"""The membership attacker's view of a target: a :class:`~fednas.serve.BlackBox` that answers posterior queries.

:class:`HttpBlackBox` is an MLaaS client of ``archleak serve`` (:mod:`fednas.serve`); it answers exactly as the
served model does in process (tested). Images travel as raw uint8 ``[N, C, H, W]``; posteriors are float32 ``[N, K]``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from fednas.serve import DEFAULT_BATCH, NPY, check_images, decode_npy, encode_npy


class ServiceError(RuntimeError):
    """The prediction service cannot be reached or refused a request (the message is one line)."""


class HttpBlackBox:
    """A client of ``archleak serve``: the same interface as :class:`ModelBlackBox`, over HTTP."""

    def __init__(self, url: str, batch_size: int = DEFAULT_BATCH, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.timeout = timeout
        self._info: dict[str, Any] | None = None

    def _request(self, path: str, body: bytes | None = None) -> tuple[str, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": NPY, "Accept": NPY})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.headers.get("Content-Type", ""), resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ServiceError(f"prediction service {self.url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceError(f"prediction service {self.url} is unreachable: {reason}") from None

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = json.loads(self._request("/v1/info")[1])
        return dict(self._info)

    def predict(self, images: np.ndarray) -> np.ndarray:
        arr = check_images(images, self.info())
        out = []
        for start in range(0, len(arr), self.batch_size):
            kind, body = self._request("/v1/predict", encode_npy(arr[start:start + self.batch_size]))
            if not kind.startswith(NPY):
                raise ServiceError(f"prediction service {self.url} answered {kind!r}, expected {NPY}")
            out.append(decode_npy(body))
        k = int(self.info()["num_classes"])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)
