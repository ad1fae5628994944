"""The interceptor bench's ratios: medians per mode, only for the modes that ran."""

from __future__ import annotations

import pytest

import simulations.bench_interceptor as bench


def test_ratios_use_medians_of_interleaved_runs(monkeypatch, data_root):
    seen, times = [], iter([10.0, 10.2, 17.0, 12.0, 10.4, 18.0])

    def fake_run(base, mode, clients, out):
        seen.append(mode)
        return {"mode": mode, "round_s": next(times), "wall_s": 50.0, "tap_hot_path_share": 1e-4}
    monkeypatch.setattr(bench, "one_run", fake_run)
    out = bench.run_interceptor_bench(str(data_root), 2, 1, ("off", "capture", "live"), repeats=2)
    assert seen == ["off", "capture", "live"] * 2                       # interleaved, not mode after mode
    assert out["median_round_s"] == {"off": 11.0, "capture": pytest.approx(10.3), "live": 17.5}
    assert out["tap_overhead_per_round"] == pytest.approx(10.3 / 11.0 - 1) and out["goal_tap_overhead_le_2pct"]
    assert out["live_overhead_per_round"] == pytest.approx(17.5 / 11.0 - 1) and "after_run_extra_wall_s" not in out
    with pytest.raises(ValueError, match="off, capture, live, after-run"):
        bench.run_interceptor_bench(str(data_root), modes=("sniff",))
