import json

import pytest
import torch

from attacker.wire.capture import CaptureRecord, CaptureStore, capture_id
from fednas.storage import CorruptFile, save_tensors


def record(store, server_round, node, broadcast, reply):
    return CaptureRecord(capture_id=capture_id("7", server_round, node), run_id="7", server_round=server_round,
                         node_id=node, message_type="train", tap="test", sent_at=1.0, replied_at=2.0,
                         broadcast_config={"server-round": server_round, "alpha-lr": 0.1},
                         broadcast_blob=store.put_blob(broadcast), broadcast_arrays=sorted(broadcast),
                         reply_metrics={"num-examples": 10.0}, reply_blob=store.put_blob(reply),
                         reply_arrays=sorted(reply))


def test_round_trip_offline_and_broadcast_stored_once(tmp_path):
    store = CaptureStore(tmp_path / "captures")
    broadcast = {"alpha:normal": torch.arange(6.0).view(2, 3), "theta:w": torch.ones(4)}
    for node in (1, 2):
        store.append(record(store, 1, node, broadcast, {"alpha:normal": torch.full((2, 3), float(node))}))
    assert len(list((tmp_path / "captures" / "blobs").iterdir())) == 3   # one broadcast, two replies
    reopened = CaptureStore(tmp_path / "captures")
    loaded = list(reopened.captures())
    assert [c.record.node_id for c in loaded] == [1, 2]
    assert torch.equal(loaded[1].reply["alpha:normal"], torch.full((2, 3), 2.0))
    assert torch.equal(loaded[0].broadcast["alpha:normal"], broadcast["alpha:normal"])


def test_truncated_or_corrupt_files_are_reported_and_skipped(tmp_path):
    store = CaptureStore(tmp_path / "captures", report=(messages := []).append)
    good = record(store, 1, 1, {"alpha:a": torch.zeros(2)}, {"alpha:a": torch.ones(2)})
    bad = record(store, 1, 2, {"alpha:a": torch.zeros(2)}, {"alpha:a": torch.full((2,), 5.0)})
    store.append(good)
    store.append(bad)
    blob = store.blobs / f"{bad.reply_blob}.safetensors"
    blob.write_bytes(blob.read_bytes()[:-3])                    # truncated reply of node 2
    with open(store.index, "ab") as fh:                          # a torn last line
        fh.write(b'{"schema_version": 1, "capture_id": "x')
    loaded = list(store.captures())
    assert [c.record.node_id for c in loaded] == [1]
    assert any("skipped" in m and bad.capture_id in m for m in messages)
    assert any("unreadable line" in m for m in messages)


def test_tampered_blob_fails_its_hash(tmp_path):
    from fednas.storage import save_tensors

    store = CaptureStore(tmp_path / "captures", report=(messages := []).append)
    rec = record(store, 1, 1, {"alpha:a": torch.zeros(2)}, {"alpha:a": torch.ones(2)})
    store.append(rec)
    save_tensors(store.blobs / f"{rec.reply_blob}.safetensors", {"alpha:a": torch.full((2,), 9.0)},
                 {"sha256": rec.reply_blob})
    assert list(store.captures()) == [] and "does not match" in messages[0]


def test_a_blob_name_that_is_not_a_digest_is_refused_before_any_path_is_built(tmp_path):
    store = CaptureStore(tmp_path / "captures", report=lambda line: None)
    (tmp_path / "outside").mkdir()
    save_tensors(tmp_path / "outside" / "secret.safetensors", {"x": torch.zeros(1)}, {})
    good = {"capture_id": "c", "run_id": "1", "server_round": 1, "node_id": 1, "message_type": "train",
            "tap": "simulation-grid", "sent_at": 0.0, "replied_at": 0.0, "broadcast_config": {},
            "broadcast_blob": "0" * 64, "broadcast_arrays": [], "reply_metrics": {}, "reply_blob": None,
            "reply_arrays": []}
    seen = []
    store.report = seen.append
    store.index.parent.mkdir(parents=True)
    lines = [{**good, "reply_blob": "../../outside/secret"}, {**good, "broadcast_blob": "/etc/passwd"}, good]
    store.index.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [r.capture_id for r in store.records()] == ["c"] and len(seen) == 2
    with pytest.raises(CorruptFile, match="not a blob name"):
        store.load_blob("../../outside/secret")


def test_a_linked_or_oversized_blob_is_refused_without_reading_it(tmp_path):
    store = CaptureStore(tmp_path / "captures", report=lambda line: None)
    digest = store.put_blob({"x": torch.ones(3)})
    path = store.blobs / f"{digest}.safetensors"
    target = tmp_path / "elsewhere.safetensors"
    path.rename(target)
    path.symlink_to(target)
    with pytest.raises(CorruptFile, match="a link"):
        store.load_blob(digest)
    path.unlink()
    with open(path, "wb") as fh:              # a valid header followed by a gigabyte of nothing (sparse)
        fh.write(target.read_bytes())
        fh.truncate(2**30)
    with pytest.raises(CorruptFile, match="but its header describes"):
        store.load_blob(digest)
