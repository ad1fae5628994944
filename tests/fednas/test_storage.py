import pytest
import torch

from fednas.run_folder import RunFolder
from fednas.storage import CorruptFile, append_jsonl, load_tensors, read_jsonl, save_tensors


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "c.safetensors"
    save_tensors(path, {"alpha:normal": torch.arange(6.0).view(2, 3)}, {"round": 3})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["alpha:normal"], torch.arange(6.0).view(2, 3)) and meta == {"round": 3}
    assert not list(tmp_path.glob(".*.tmp")), "temporary files are cleaned up"


def test_truncated_checkpoint_is_reported_and_skipped(tmp_path):
    ckpt = tmp_path / "checkpoints"
    save_tensors(ckpt / "round-0001.safetensors", {"a": torch.ones(3)}, {"round": 1})
    save_tensors(ckpt / "round-0002.safetensors", {"a": torch.zeros(3)}, {"round": 2})
    raw = (ckpt / "round-0002.safetensors").read_bytes()
    (ckpt / "round-0002.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFile):
        load_tensors(ckpt / "round-0002.safetensors")
    messages = []
    server_round, tensors, _ = RunFolder(tmp_path).latest_checkpoint(messages.append)
    assert server_round == 1 and torch.equal(tensors["a"], torch.ones(3))
    assert "round-0002" in messages[0]


def test_jsonl_append(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"round": 1})
    append_jsonl(path, {"round": 2})
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]


def test_atomic_writes_honour_the_umask_and_private_files_are_never_readable(tmp_path):
    import os
    import stat

    from fednas.storage import atomic_write_bytes

    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "checkpoint", b"weights")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "checkpoint").stat().st_mode) == 0o600
    os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "report", b"figures")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o644


def test_private_keys_are_0600_before_they_reach_their_path(tmp_path, monkeypatch):
    import os
    import stat

    from simulations.certs import generate_certificates

    seen = {}
    replace = os.replace

    def spy(src, dst):                       # the mode a file has at the moment it appears at its path
        seen[os.path.basename(dst)] = stat.S_IMODE(os.stat(src).st_mode)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    generate_certificates(tmp_path / "certs")
    assert seen["ca.key"] == seen["server.key"] == 0o600
    assert seen["ca.crt"] & 0o044, "certificates stay readable"
