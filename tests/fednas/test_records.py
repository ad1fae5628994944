import pytest
import torch

from fednas.federation import aggregate
from fednas.records import PACKED, from_array_record, pack_state, to_array_record, unpack_state
from fednas.search_space import SupernetSpec
from fednas.state import ALPHA_PREFIX, THETA_PREFIX, export_state, import_state
from fednas.supernet import build_supernet


def net(seed):
    return build_supernet(SupernetSpec(channels=4, nodes=2), (0.5,), (0.25,), torch.Generator().manual_seed(seed))


def test_array_record_round_trip_is_exact():
    state = export_state(net(0))
    back = from_array_record(to_array_record(state))
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)
    assert any(k.startswith(ALPHA_PREFIX) for k in back) and any(k.startswith(THETA_PREFIX) for k in back)


def test_import_export_moves_alpha_and_theta():
    a, b = net(0), net(1)
    import_state(b, export_state(a))
    for k, v in export_state(a).items():
        assert torch.equal(v, export_state(b)[k])
    only_alpha = export_state(net(2), weights=False)
    assert all(k.startswith(ALPHA_PREFIX) for k in only_alpha)
    import_state(b, only_alpha)          # θ untouched, α replaced
    assert torch.equal(b.alphas["normal"], only_alpha["alpha:normal"])


def test_aggregate_is_the_weighted_mean():
    s1 = {"alpha:x": torch.tensor([1.0, 2.0])}
    s2 = {"alpha:x": torch.tensor([4.0, 8.0])}
    out = aggregate([s1, s2], [1, 3])
    torch.testing.assert_close(out["alpha:x"], torch.tensor([3.25, 6.5]))


def test_theta_travels_packed_in_one_float_array_and_other_dtypes_pass_through():
    state = export_state(net(0))
    state["theta:counter"] = torch.tensor(7, dtype=torch.int64)
    record = to_array_record(state)
    alpha_groups = sum(k.startswith(ALPHA_PREFIX) for k in state)
    packed = [k for k in record if k.startswith(PACKED)]
    assert len(packed) == 1 and len(packed[0]) < 4096  # the layout rides in the name, compressed
    assert set(record) == {k for k in state if k.startswith(ALPHA_PREFIX)} | {packed[0], "theta:counter"}
    assert len(record) == alpha_groups + 2 < len(state) / 10
    back = from_array_record(record)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_a_layout_that_does_not_match_the_packed_values_is_rejected():
    packed = pack_state({"theta:a": torch.ones(3), "theta:b": torch.ones(2, 2)})
    key = next(iter(packed))
    packed[key] = packed[key][:-1]
    with pytest.raises(ValueError, match="layout describes 7"):
        unpack_state(packed)
    with pytest.raises(ValueError, match="does not hold a readable layout"):
        unpack_state({PACKED + "not-base64!": torch.ones(3)})
