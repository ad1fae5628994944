"""The simulation tap: a Grid wrapper that records every broadcast and reply crossing it.

In a simulation nothing crosses a network: the ``Grid`` handed to the ServerApp is the one place every
message passes. ``TappedGrid`` forwards every call to the real grid and only *reads* the messages, so
the run is unchanged (a test checks that the final model is identical with the tap on and off).

Cost: on the ServerApp's path the tap only keeps references to the messages' serialized array bytes
(immutable ``bytes``, no copy). Decoding, hashing and writing happen in a writer thread; ``close()``
drains it so that nothing is lost. Any error inside the tap is counted and logged; it never reaches
the training loop.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from attacker.wire.capture import CaptureRecord, CaptureStore, capture_id
from attacker.wire.messages import RawArrays, config_of, decode_arrays, metrics_of, raw_arrays


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
    hot_path_s: float = 0.0       # time spent on the ServerApp's thread
    writer_s: float = 0.0         # time spent decoding and writing, off the training path
    last_error: str = ""
    by_round: dict[int, int] = field(default_factory=dict)


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
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="archleak-tap-writer", daemon=True)
        self._writer.start()

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
        self._guard(self._note_sent, messages, ids)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._guard(self._note_replies, replies)
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

    def close(self, timeout_s: float = 600.0) -> TapStats:
        """Write everything still queued; after this the captures on disk are complete."""
        self._jobs.put(None)
        self._writer.join(timeout_s)
        return self.stats

    # --- hot path: references only ----------------------------------------------------------------
    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the tap must never disturb training
            self._error(exc)
        finally:
            self.stats.hot_path_s += time.perf_counter() - start

    def _error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{exc.__class__.__name__}: {exc}"
        self.log(f"archleak tap: error ignored ({self.stats.last_error})\n{traceback.format_exc(limit=3)}")

    def _note_sent(self, messages: list[Message], ids: list[str]) -> None:
        now = time.time()
        shared: dict[int, tuple[RawArrays, dict[str, Any]]] = {}
        for msg, mid in zip(messages, ids, strict=False):
            content = msg.content
            if id(content) not in shared:   # one RecordDict is usually shared by all of a round's messages
                shared[id(content)] = (raw_arrays(content), config_of(content))
            raw, config = shared[id(content)]
            self._jobs.put(("sent", (mid, msg.metadata.dst_node_id, msg.metadata.message_type, config, raw, now)))

    def _note_replies(self, replies: list[Message]) -> None:
        now = time.time()
        for reply in replies:
            if reply.has_error():
                item = (reply.metadata.reply_to_message_id, reply.error.reason, {}, {}, now)
            else:
                item = (reply.metadata.reply_to_message_id, None, raw_arrays(reply.content),
                        metrics_of(reply.content), now)
            self._jobs.put(("reply", item))

    # --- writer thread ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        # broadcasts shared by several messages are decoded once; the cache holds the raw dict itself so
        # that its id() cannot be reused by another object while the entry lives
        blobs: dict[int, tuple[RawArrays, str, list[str]]] = {}
        while (job := self._jobs.get()) is not None:
            start = time.perf_counter()
            try:
                kind, item = job
                if kind == "sent":
                    mid, node, mtype, config, raw, sent_at = item
                    if id(raw) not in blobs:
                        tensors = decode_arrays(raw)
                        blobs[id(raw)] = (raw, self.store.put_blob(tensors), sorted(tensors))
                    _, blob, names = blobs[id(raw)]
                    self._pending[mid] = _Sent(node, mtype, config, blob, names, sent_at)
                else:
                    self._write_reply(*item)
            except Exception as exc:  # noqa: BLE001 - a failed capture is counted, training goes on
                self._error(exc)
            finally:
                self.stats.writer_s += time.perf_counter() - start
            if len(blobs) > 64:
                blobs.clear()

    def _write_reply(self, reply_to: str, error: str | None, raw: RawArrays, metrics: dict[str, float],
                     replied_at: float) -> None:
        sent = self._pending.pop(reply_to, None)
        if sent is None:
            return
        server_round = int(sent.config.get("server-round", 0))
        tensors = decode_arrays(raw) if raw else {}
        record = CaptureRecord(
            capture_id=capture_id(self.run_id, server_round, sent.node_id), run_id=self.run_id,
            server_round=server_round, node_id=sent.node_id, message_type=sent.message_type,
            tap="simulation-grid", sent_at=sent.sent_at, replied_at=replied_at,
            broadcast_config=sent.config, broadcast_blob=sent.blob, broadcast_arrays=sent.arrays,
            reply_metrics=metrics, reply_blob=self.store.put_blob(tensors) if tensors else None,
            reply_arrays=sorted(tensors), reply_error=error)
        self.store.append(record)
        self.stats.captures += 1
        self.stats.by_round[server_round] = self.stats.by_round.get(server_round, 0) + 1
        if self.on_capture is not None:
            self.on_capture(record)
