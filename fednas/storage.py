"""Atomic files: JSON, JSONL, safetensors checkpoints, and the package versions saved with results.

Every write goes to a temporary file in the same folder and is renamed into place, so a reader never
sees half a file. Nothing here unpickles.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

VERSIONED_PACKAGES = ("archleak", "flwr", "torch", "torchvision", "numpy", "pydantic", "safetensors")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a missing file is empty, an unparsable line raises."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def csv_bytes(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """A CSV table (header first) of ``columns`` from each row; missing values are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows({k: r.get(k) for k in columns} for r in rows)
    return buf.getvalue().encode()


def append_record(path: Path, record: Mapping[str, Any] | str) -> None:
    """Append one JSON line with a single ``write`` on an O_APPEND descriptor: safe for concurrent writers
    (several processes appending to one log) and cheap for long logs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = record if isinstance(record, str) else json.dumps(record)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append by rewriting atomically (files here are small; a crash never leaves a torn line)."""
    write_jsonl(path, [*read_jsonl(path), record])


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Save tensors as safetensors with ``meta`` as JSON in the header."""
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(data, metadata={"archleak": json.dumps(meta)}))


class CorruptFile(ValueError):
    """A file exists but cannot be read (truncated or not what it claims to be)."""


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_tensors`; raises :class:`CorruptFile` on a damaged file."""
    raw = Path(path).read_bytes()
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("archleak", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise CorruptFile(f"{path}: {exc}") from exc
    return tensors, meta


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
