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
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

VERSIONED_PACKAGES = ("archleak", "flwr", "torch", "torchvision", "numpy", "pydantic", "safetensors")


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (setting it is racy across threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all (temporary file, fsync, rename). Permissions: ``mode`` if given (a
    private key: 0o600, set on the temporary file before a byte is written), else 0o666 less the umask, as
    ``open()`` would create it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")   # created 0o600
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_jsonl(path: Path, skip: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL file; a missing file is empty. An unparsable line (torn by a crash while appending)
    raises, or, with ``skip``, is reported through it and left out."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if skip is None:
                raise
            skip(f"{path}:{number}: unreadable line skipped ({exc.msg})")
            continue
        if isinstance(record, dict):
            out.append(record)
        elif skip is not None:
            skip(f"{path}:{number}: not a JSON object, skipped")
    return out


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


MAX_HEADER = 100 * 2**20   # a safetensors JSON header larger than this is not one the project wrote


def _declared_size(fh: Any, path: Path) -> tuple[int, dict[str, Any]]:
    """(the file size the safetensors header declares, the header), from the header alone."""
    head = fh.read(8)
    if len(head) < 8:
        raise CorruptFile(f"{path}: shorter than a safetensors header")
    header_len = int.from_bytes(head, "little")
    if header_len > MAX_HEADER:
        raise CorruptFile(f"{path}: header of {header_len} bytes declared (at most {MAX_HEADER})")
    try:
        header: dict[str, Any] = json.loads(fh.read(header_len))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptFile(f"{path}: unreadable header ({exc.__class__.__name__})") from None
    return 8 + header_len + max(ends, default=0), header


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_tensors`; raises :class:`CorruptFile` on a damaged file. The size the header declares
    is checked against the file's before its data is read, so a damaged or planted file costs no memory."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFile(f"{path}: missing" if not path.exists() else f"{path}: not a regular file")
    with open(path, "rb") as fh:
        declared, header = _declared_size(fh, path)
        actual = os.fstat(fh.fileno()).st_size
        if declared != actual:
            raise CorruptFile(f"{path}: {actual} bytes, but its header describes {declared}")
        fh.seek(0)
        raw = fh.read()
    try:
        tensors = st_load(raw)
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
