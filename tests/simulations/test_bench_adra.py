"""The ADRA benchmark's trained-weight cache: train once, then load exactly the same weights."""

from __future__ import annotations

import torch

from attacker.cache import cache_dir
from fednas.config import parse_run_config
from fednas.data import load_dataset
from simulations.bench_adra import bench_weights, result_line


def test_trained_bench_weights_are_cached_and_identical(data_root, mnist_or_digits):
    cfg = parse_run_config({"dataset": mnist_or_digits, "data-root": str(data_root), "channels": 4, "nodes": 2})
    data = load_dataset(mnist_or_digits, str(data_root))
    before = set(cache_dir().glob("bench-weights-*.safetensors"))
    first = bench_weights(cfg, data, 2)
    files = set(cache_dir().glob("bench-weights-*.safetensors")) - before
    assert len(files) == 1
    stamp = next(iter(files)).stat().st_mtime_ns
    again = bench_weights(cfg, data, 2)
    assert next(iter(files)).stat().st_mtime_ns == stamp          # loaded, not retrained
    round0 = bench_weights(cfg, data, 0)
    state, loaded, untrained = first.state_dict(), again.state_dict(), round0.state_dict()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    assert any(not torch.equal(state[k], untrained[k]) for k in state)   # 2 θ steps did change the weights
    assert again.training and all(p.requires_grad for p in again.parameters())


def test_result_line_summarises_a_case():
    result = {"threat": "wire", "method": "adra", "batch_size": 1, "activation": "elu", "alpha_entries": 224,
              "attack": {"recognised": 1.0, "identified": 0.5, "psnr": 15.6, "ssim": 0.7},
              "label_only_baseline": {"recognised": 1.0, "identified": 0.0}, "seconds_per_image": 1.6}
    line = result_line(result)
    assert "wire adra B=1 elu α=224" in line and "identified 0.50" in line and "label-only 1.00/0.00" in line
    assert "not applicable" in result_line({**result, "not_applicable": "no Δθ"})
