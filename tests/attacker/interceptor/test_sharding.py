"""After-run workers split the captures by groups that share weights, evenly and completely."""

from attacker.interceptor.interceptor import balanced_shard


def test_shards_split_the_work_evenly_and_completely():
    groups = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    parts = [balanced_shard(groups, k, 2) for k in range(2)]
    flat = sorted(x for part in parts for g in part for x in g)
    assert flat == list(range(1, 13))
    assert sorted(sum(len(g) for g in part) for part in parts) == [4, 8]
    one_group = [balanced_shard([[1, 2, 3, 4, 5]], k, 2) for k in range(2)]
    assert all(one_group) and sorted(x for p in one_group for g in p for x in g) == [1, 2, 3, 4, 5]


def test_a_worker_that_starts_after_another_has_finished_still_takes_its_part(tiny_run, tmp_path):
    """Both after-run workers cut the same parts, whenever each starts: every capture is attacked once."""
    import shutil

    from attacker.interceptor.interceptor import Interceptor
    from fednas.run_folder import RunFolder
    from fednas.storage import read_jsonl
    from tests.attacker.interceptor.test_failures import settings

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("reconstructions"))
    first = Interceptor(run, settings(run), log=lambda line: None)
    first.process(first.pending(), shard=(0, 2))          # ends before the second starts
    second = Interceptor(run, settings(run), log=lambda line: None)
    second.process(second.pending(), shard=(1, 2))
    lines = read_jsonl(RunFolder(run).reconstructions("wire") / "metrics.jsonl")
    captures = [r.capture_id for r in first.store.records() if r.reply_blob]
    assert sorted(r["capture_id"] for r in lines) == sorted(captures)
