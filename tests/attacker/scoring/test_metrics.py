import math

import numpy as np
import pytest
import torch

from attacker.scoring.metrics import CANDIDATES, assign, build_truth, mse, psnr, ssim, success_rates


def test_mse_and_psnr_by_hand():
    a, b = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1)
    assert float(mse(a, b)[0]) == pytest.approx(0.01)
    assert float(psnr(a, b)[0]) == pytest.approx(20.0)


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 28, 28, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert float(ssim(noisy, x).max()) < 0.9


def test_assign_recovers_a_permutation():
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(3, 1, 16, 16, generator=g)
    shuffled = truth[[2, 0, 1]]
    order = assign(shuffled, truth)
    assert torch.equal(shuffled[order], truth)


def test_truth_puts_the_true_image_first_among_same_class_decoys():
    g = torch.Generator().manual_seed(2)
    images = (torch.rand(400, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(400) % 2
    truth = build_truth(images, labels, [5, 6], seed=0)
    assert torch.equal(truth.images[0], images[5].float() / 255)
    for n, pool in enumerate(truth.candidates):
        assert pool.shape[0] == CANDIDATES and torch.equal(pool[0], truth.images[n])
    again = build_truth(images, labels, [5, 6], seed=0)
    assert torch.equal(again.candidates[1], truth.candidates[1])


def test_success_rates_average_each_criterion():
    rows = [{"recognised": True, "identified": False, "ssim>=0.5": True, "mse": 0.1, "psnr": 10.0, "ssim": 0.6},
            {"recognised": False, "identified": False, "ssim>=0.5": False, "mse": 0.3, "psnr": 5.0, "ssim": 0.2}]
    out = success_rates(rows)
    assert out["recognised"] == 0.5 and out["identified"] == 0.0 and math.isclose(out["ssim"], 0.4)
    assert np.isclose(out["mse"], 0.2)
