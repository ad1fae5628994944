"""The simulation tap: a Grid wrapper that records every broadcast and reply crossing it.

In a simulation nothing crosses a network: the ``Grid`` handed to the ServerApp is the one place every
message passes. ``TappedGrid`` forwards every call to the real grid and only *reads* the messages, so
the run is unchanged (a test checks that the final model is identical with the tap on and off). Any
error inside the tap is counted and logged; it never reaches the training loop.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from attacker.capture import CaptureRecord, CaptureStore, capture_id
from fednas.records import from_array_record


@dataclass
class _Sent:
    node_id: int
    message_type: str
    config: dict[str, Any]
    blob: str
    arrays: list[str]
    sent_at: float


@dataclass
class TapStats:
    captures: int = 0
    errors: int = 0
    seconds: float = 0.0
    last_error: str = ""
    by_round: dict[int, int] = field(default_factory=dict)


def _config_of(content: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for record in content.config_records.values():
        out.update({k: v for k, v in record.items() if not isinstance(v, bytes)})
    return out


def _arrays_of(content: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for record in content.array_records.values():
        out.update(from_array_record(record))
    return out


def _metrics_of(content: RecordDict) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in content.metric_records.values():
        out.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
    return out


class TappedGrid(Grid):
    """Forwards everything to ``inner``; turns each (broadcast, reply) pair into a stored capture."""

    def __init__(self, inner: Grid, store: CaptureStore, run_id: str,
                 on_capture: Callable[[CaptureRecord], None] | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.inner = inner
        self.store = store
        self.run_id = run_id
        self.on_capture = on_capture
        self.log = log
        self.stats = TapStats()
        self._pending: dict[str, _Sent] = {}

    # --- plain delegation -------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    # --- observed traffic -------------------------------------------------------------------------
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        self._guard(self._record_sent, messages, ids)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._guard(self._record_replies, replies)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply arrived or ``timeout`` passed (as Flower's grids do)."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if waiting:
                time.sleep(0.1)
        return replies

    # --- capture bookkeeping ----------------------------------------------------------------------
    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the tap must never disturb training
            self.stats.errors += 1
            self.stats.last_error = f"{exc.__class__.__name__}: {exc}"
            self.log(f"archleak tap: error ignored ({self.stats.last_error})\n{traceback.format_exc(limit=3)}")
        finally:
            self.stats.seconds += time.perf_counter() - start

    def _record_sent(self, messages: list[Message], ids: list[str]) -> None:
        blobs: dict[int, tuple[str, list[str], dict[str, Any]]] = {}
        now = time.time()
        for msg, mid in zip(messages, ids, strict=False):
            content = msg.content
            if id(content) not in blobs:  # one RecordDict is usually shared by all of a round's messages
                arrays = _arrays_of(content)
                blobs[id(content)] = (self.store.put_blob(arrays), sorted(arrays), _config_of(content))
            blob, names, config = blobs[id(content)]
            self._pending[mid] = _Sent(msg.metadata.dst_node_id, msg.metadata.message_type, config, blob,
                                       names, now)

    def _record_replies(self, replies: list[Message]) -> None:
        for reply in replies:
            sent = self._pending.pop(reply.metadata.reply_to_message_id, None)
            if sent is None:
                continue
            error = reply.error.reason if reply.has_error() else None
            arrays = {} if error else _arrays_of(reply.content)
            server_round = int(sent.config.get("server-round", 0))
            record = CaptureRecord(
                capture_id=capture_id(self.run_id, server_round, sent.node_id), run_id=self.run_id,
                server_round=server_round, node_id=sent.node_id, message_type=sent.message_type,
                tap="simulation-grid", sent_at=sent.sent_at, replied_at=time.time(),
                broadcast_config=sent.config, broadcast_blob=sent.blob, broadcast_arrays=sent.arrays,
                reply_metrics={} if error else _metrics_of(reply.content),
                reply_blob=self.store.put_blob(arrays) if arrays else None, reply_arrays=sorted(arrays),
                reply_error=error)
            self.store.append(record)
            self.stats.captures += 1
            self.stats.by_round[server_round] = self.stats.by_round.get(server_round, 0) + 1
            if self.on_capture is not None:
                self.on_capture(record)
