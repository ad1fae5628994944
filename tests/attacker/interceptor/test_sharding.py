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
