"""Rebuilding Flower messages from observed Fleet API traffic and turning them into captures.

SuperNodes talk to the SuperLink with protobuf bodies over HTTP/1.1. A message travels as a tree of
content-addressed objects (Message → RecordDict → ArrayRecord → Array → ArrayChunk): ``pull-messages``
and ``push-messages`` declare the tree, ``pull-object`` / ``push-object`` move the objects that the other
side lacks. Because the SuperLink deduplicates, an eavesdropper must cache objects seen in *both*
directions to rebuild a message. The cache is bounded in bytes (least recently used out first) and objects
of a run's earlier rounds are evicted once a later round's instruction has been rebuilt; a reply's objects
are dropped as soon as the reply is stored.

``get-run`` answers carry the run's ``override_config``: with the published app's defaults (public
knowledge) that is the run's full configuration, which the attacker writes to ``<run-id>/config.json``.

:class:`WireObserver` is fed (path, request body, response body) exchanges and never answers anything:
decoding errors are counted and the exchange is ignored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.common.serde import user_config_from_proto
from flwr.proto.fleet_pb2 import PullMessagesResponse, PushMessagesRequest
from flwr.proto.message_pb2 import ObjectTree, PullObjectRequest, PullObjectResponse, PushObjectRequest
from flwr.proto.run_pb2 import GetRunResponse
from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from attacker.wire.capture import CaptureRecord, CaptureStore, capture_id
from attacker.wire.messages import config_of, decode_arrays, metrics_of, raw_arrays

FLEET = "/v1/fleet/"
# the Fleet API of flwr 1.42 (flwr/supernode/fleet_http_client.py); anything else is counted as unknown
FLEET_ENDPOINTS = frozenset({"register-node", "activate-node", "deactivate-node", "unregister-node",
                             "send-node-heartbeat", "pull-messages", "push-messages", "get-run", "get-fab",
                             "push-object", "pull-object", "confirm-message-received"})
KEEP_SMALL = 64 * 1024   # objects below this size survive round eviction (records, configs: cheap, often reused)


@dataclass
class WireStats:
    exchanges: int = 0
    fleet_exchanges: int = 0
    undecodable: int = 0
    unknown_paths: int = 0
    failed_exchanges: int = 0
    runs_seen: int = 0
    objects_cached: int = 0
    objects_evicted: int = 0
    instructions: int = 0
    replies: int = 0
    captures: int = 0
    incomplete_replies: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pending:
    tree: ObjectTree
    seen_at: float
    needed: set[str]


class ObjectCache:
    """Content-addressed object bytes, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int, stats: WireStats) -> None:
        self.max_bytes, self.stats = max_bytes, stats
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.size = 0

    def put(self, object_id: str, content: bytes) -> None:
        if object_id in self._items:
            self._items.move_to_end(object_id)
            return
        self._items[object_id] = content
        self.size += len(content)
        self.stats.objects_cached += 1
        while self.size > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)
            self.stats.objects_evicted += 1

    def drop(self, ids: set[str], min_bytes: int = 0) -> None:
        for i in ids:
            content = self._items.get(i)
            if content is not None and len(content) >= min_bytes:
                del self._items[i]
                self.size -= len(content)
                self.stats.objects_evicted += 1

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._items

    def contents(self, ids: set[str]) -> dict[str, bytes]:
        for i in ids:
            self._items.move_to_end(i)
        return {i: self._items[i] for i in ids}


class WireObserver:
    """Turns observed Fleet traffic into captures under ``<base>/<run-id>/captures``."""

    def __init__(self, base: Path, max_cache_bytes: int = 512 * 2**20,
                 on_capture: Callable[[Path, CaptureRecord], None] | None = None,
                 log: Callable[[str], None] = print, max_pending_s: float = 3600.0,
                 on_run: Callable[[int, dict[str, Any]], None] | None = None, max_pending: int = 4096) -> None:
        self.base, self.log, self.on_capture, self.max_pending_s = Path(base), log, on_capture, max_pending_s
        self.max_pending = max_pending     # message trees awaiting their objects, per direction (oldest go first)
        self.on_run = on_run
        self.runs: dict[int, dict[str, Any]] = {}
        self._round_objects: dict[tuple[int, int], set[str]] = {}
        self.stats = WireStats()
        self.cache = ObjectCache(max_cache_bytes, self.stats)
        self._instructions: dict[str, _Pending] = {}
        self._replies: dict[str, _Pending] = {}
        self._broadcasts: dict[str, tuple[Message, float]] = {}
        self._stores: dict[int, CaptureStore] = {}

    def observe(self, method: str, path: str, request: bytes, status: int, response: bytes) -> None:
        """One request/response exchange as seen on the wire; never raises."""
        self.stats.exchanges += 1
        name = path[len(FLEET):].split("?")[0] if path.startswith(FLEET) else ""
        if name not in FLEET_ENDPOINTS or method != "POST":
            self.stats.unknown_paths += 1
            return
        self.stats.fleet_exchanges += 1
        self.stats.by_path[name] = self.stats.by_path.get(name, 0) + 1
        if status != 200:
            self.stats.failed_exchanges += 1
            return
        handler = _HANDLERS.get(name)
        if handler is None:
            return
        try:
            handler(self, request, response)
            self._complete()
        except Exception as exc:  # noqa: BLE001 - a body we cannot decode is counted and ignored
            self.stats.undecodable += 1
            self.log(f"archleak proxy: could not decode {name} ({exc.__class__.__name__}: {exc})")

    # --- protobuf handlers ------------------------------------------------------------------------
    def _pull_messages(self, request: bytes, response: bytes) -> None:
        res = PullMessagesResponse.FromString(response)
        for msg, tree in zip(res.messages_list, res.message_object_trees, strict=False):
            self._wait(self._instructions, tree)

    def _push_messages(self, request: bytes, response: bytes) -> None:
        req = PushMessagesRequest.FromString(request)
        for msg, tree in zip(req.messages_list, req.message_object_trees, strict=False):
            self._wait(self._replies, tree)

    def _wait(self, pending: dict[str, _Pending], tree: ObjectTree) -> None:
        """Hold a message tree until its objects have crossed the wire; beyond ``max_pending`` trees the oldest
        is given up (counted as incomplete), so crafted trees whose objects never come cannot grow memory."""
        pending[tree.object_id] = _Pending(tree, time.time(), _ids(tree))
        while len(pending) > self.max_pending:
            del pending[next(iter(pending))]
            self.stats.incomplete_replies += 1

    def _get_run(self, request: bytes, response: bytes) -> None:
        run = GetRunResponse.FromString(response).run
        if run.run_id and run.run_id not in self.runs:
            self.runs[run.run_id] = dict(user_config_from_proto(run.override_config))
            self.stats.runs_seen += 1
            if self.on_run is not None:
                self.on_run(run.run_id, self.runs[run.run_id])

    def _pull_object(self, request: bytes, response: bytes) -> None:
        req, res = PullObjectRequest.FromString(request), PullObjectResponse.FromString(response)
        if res.object_found and res.object_available and res.object_content:
            self.cache.put(req.object_id, res.object_content)

    def _push_object(self, request: bytes, response: bytes) -> None:
        req = PushObjectRequest.FromString(request)
        if req.object_content:
            self.cache.put(req.object_id, req.object_content)

    # --- rebuilding -------------------------------------------------------------------------------
    def _ready(self, pending: dict[str, _Pending]) -> list[tuple[str, Message, set[str]]]:
        done = []
        for root, item in list(pending.items()):
            if all(i in self.cache for i in item.needed):
                msg = inflate_object_from_contents(root, self.cache.contents(item.needed), keep_object_contents=True)
                del pending[root]
                if isinstance(msg, Message):
                    done.append((root, msg, item.needed))
            elif time.time() - item.seen_at > self.max_pending_s:
                del pending[root]
                self.stats.incomplete_replies += 1
        return done

    def _complete(self) -> None:
        for root, msg, ids in self._ready(self._instructions):
            self.stats.instructions += 1
            self._broadcasts[root] = (msg, time.time())   # a message's id is its object id (the tree root)
            self._new_round(msg, ids)
        for _, reply, ids in self._ready(self._replies):
            self.stats.replies += 1
            sent = self._broadcasts.pop(reply.metadata.reply_to_message_id, None)
            if sent is not None:
                self._store(sent[0], sent[1], reply)
            self.cache.drop(ids - self._still_needed(), KEEP_SMALL)
        cutoff = time.time() - self.max_pending_s
        for mid in [m for m, (_, t) in self._broadcasts.items() if t < cutoff]:
            del self._broadcasts[mid]

    def _still_needed(self) -> set[str]:
        return set().union(*(p.needed for p in (*self._instructions.values(), *self._replies.values())))

    def _new_round(self, msg: Message, ids: set[str]) -> None:
        """Objects of this run's earlier rounds are no longer needed once a later round has begun."""
        run_id, server_round = msg.metadata.run_id, int(config_of(msg.content).get("server-round", 0))
        key = (run_id, server_round)
        if key not in self._round_objects:
            old = [k for k in self._round_objects if k[0] == run_id and k[1] < server_round]
            if old:
                stale = set().union(*(self._round_objects.pop(k) for k in old)) - self._still_needed() - ids
                self.cache.drop(stale, KEEP_SMALL)
        self._round_objects.setdefault(key, set()).update(ids)

    def _store(self, sent: Message, sent_at: float, reply: Message) -> None:
        run_id = sent.metadata.run_id
        store = self._stores.get(run_id)
        if store is None:
            store = self._stores[run_id] = CaptureStore(self.base / str(run_id) / "captures", report=self.log)
        config = config_of(sent.content)
        server_round = int(config.get("server-round", 0))
        node = sent.metadata.dst_node_id
        error = reply.error.reason if reply.has_error() else None
        raw = {} if error else decode_arrays(raw_arrays(reply.content))
        broadcast = decode_arrays(raw_arrays(sent.content))
        record = CaptureRecord(
            capture_id=capture_id(str(run_id), server_round, node), run_id=str(run_id),
            server_round=server_round, node_id=node, message_type=sent.metadata.message_type, tap="http-proxy",
            sent_at=sent_at, replied_at=time.time(), broadcast_config=config,
            broadcast_blob=store.put_blob(broadcast), broadcast_arrays=sorted(broadcast),
            reply_metrics={} if error else metrics_of(reply.content),
            reply_blob=store.put_blob(raw) if raw else None, reply_arrays=sorted(raw), reply_error=error)
        store.append(record)
        self.stats.captures += 1
        if self.on_capture is not None:
            self.on_capture(store.root.parent, record)

    def summary(self) -> dict[str, Any]:
        return {**self.stats.__dict__, "cache_bytes": self.cache.size,
                "pending_instructions": len(self._instructions), "pending_replies": len(self._replies)}


def _ids(tree: ObjectTree) -> set[str]:
    return {t.object_id for t in iterate_object_tree(tree)}


_HANDLERS: dict[str, Callable[[WireObserver, bytes, bytes], None]] = {
    "pull-messages": WireObserver._pull_messages,
    "push-messages": WireObserver._push_messages,
    "pull-object": WireObserver._pull_object,
    "get-run": WireObserver._get_run,
    "push-object": WireObserver._push_object,
}
