"""Captures: one client's exchange in one round, as seen on the wire, stored append-only.

Layout of a capture folder::

    index.jsonl                one CaptureRecord (JSON) per line, appended with a single write
    blobs/<sha256>.safetensors the arrays of a broadcast or a reply, content-addressed (a round's
                               broadcast is stored once however many clients received it)

Blobs are written atomically (temporary file + rename) before their index line. A torn index line, a
missing blob or a damaged blob is reported and skipped, never half-read. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from fednas.storage import CorruptFile, append_record, load_tensors, save_tensors

SCHEMA_VERSION = 1
DIGEST = r"^[0-9a-f]{64}$"    # a blob's name is its SHA-256: nothing else may name a path
Scalar = int | float | str | bool


class CaptureRecord(BaseModel):
    """Metadata of one capture; the arrays live in the blobs it references."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    capture_id: str
    run_id: str
    server_round: int = Field(ge=0)
    node_id: int
    message_type: str
    tap: str = Field(description="what produced it: 'simulation-grid' or 'http-proxy'")
    sent_at: float
    replied_at: float | None
    broadcast_config: dict[str, Scalar | list[Scalar]]
    broadcast_blob: str = Field(pattern=DIGEST)
    broadcast_arrays: list[str]
    reply_metrics: dict[str, float]
    reply_blob: str | None = Field(pattern=DIGEST)
    reply_arrays: list[str]
    reply_error: str | None = None


@dataclass(frozen=True)
class Capture:
    """A loaded capture: the record plus its tensors (what the attacker saw)."""

    record: CaptureRecord
    broadcast: dict[str, torch.Tensor]
    reply: dict[str, torch.Tensor]


@dataclass(frozen=True)
class WireView:
    """One capture as the eavesdropper saw it."""

    capture_id: str
    server_round: int
    node_id: int
    broadcast_id: str                               # content hash of the broadcast arrays
    broadcast: Mapping[str, torch.Tensor]
    reply: Mapping[str, torch.Tensor]
    config: Mapping[str, Any]
    metrics: Mapping[str, float]


def content_hash(arrays: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        t = arrays[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def capture_id(run_id: str, server_round: int, node_id: int) -> str:
    return f"{run_id}-r{server_round:04d}-n{node_id}"


class CaptureStore:
    """Append-only capture folder (see the module docstring)."""

    def __init__(self, root: Path, report: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.report = report
        self.index = self.root / "index.jsonl"
        self.blobs = self.root / "blobs"

    def put_blob(self, arrays: Mapping[str, torch.Tensor]) -> str:
        digest = content_hash(arrays)
        path = self.blobs / f"{digest}.safetensors"
        if not path.exists():
            save_tensors(path, arrays, {"sha256": digest})
        return digest

    def append(self, record: CaptureRecord) -> None:
        """Append one record (a single write on an O_APPEND descriptor)."""
        append_record(self.index, record.model_dump_json())

    def records(self) -> Iterator[CaptureRecord]:
        """Every readable record, in order; unreadable lines are reported and skipped."""
        if not self.index.exists():
            return
        for number, line in enumerate(self.index.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                yield CaptureRecord.model_validate_json(line)
            except ValueError as exc:
                self.report(f"capture index {self.index}:{number}: unreadable line skipped ({exc.__class__.__name__})")

    def load_blob(self, digest: str) -> dict[str, torch.Tensor]:
        if not re.fullmatch(DIGEST, digest):
            raise CorruptFile(f"{digest[:80]!r} is not a blob name (a SHA-256 in hex)")
        path = self.blobs / f"{digest}.safetensors"
        if path.is_symlink():
            raise CorruptFile(f"{path}: a link, not a blob")
        tensors, meta = load_tensors(path)
        if meta.get("sha256") != digest or content_hash(tensors) != digest:
            raise CorruptFile(f"{path}: content does not match its hash")
        return tensors

    def load(self, record: CaptureRecord) -> Capture:
        reply = self.load_blob(record.reply_blob) if record.reply_blob else {}
        return Capture(record, self.load_blob(record.broadcast_blob), reply)

    def captures(self, wanted: set[str] | None = None) -> Iterator[Capture]:
        """Loaded captures (optionally only ``wanted`` ids); damaged ones are reported and skipped."""
        for record in self.records():
            if wanted is not None and record.capture_id not in wanted:
                continue
            try:
                yield self.load(record)
            except CorruptFile as exc:
                self.report(f"capture {record.capture_id} skipped: {exc}")


def describe_capture(record: CaptureRecord) -> dict[str, Any]:
    """A short description for logs."""
    return json.loads(record.model_dump_json(include={"capture_id", "server_round", "node_id", "tap"}))


def wire_view(store: CaptureStore, record: CaptureRecord) -> WireView:
    """What the eavesdropper saw of one stored capture (raises CorruptFile for a damaged blob)."""
    capture = store.load(record)
    return WireView(record.capture_id, record.server_round, record.node_id, record.broadcast_blob,
                    capture.broadcast, capture.reply, record.broadcast_config, record.reply_metrics)
