import math

import pytest
import torch

from attacker.reconstruct.objectives import OBJECTIVES, total_variation


def test_l2_is_the_relative_squared_error():
    pred, obs = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 2.0]])
    assert float(OBJECTIVES.get("l2")(pred, obs, None)[0]) == pytest.approx(1.0 / 8.0)


def test_cosine_by_hand():
    pred, obs = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    out = OBJECTIVES.get("cosine")(pred, obs, None)
    assert float(out[0]) == pytest.approx(1.0) and float(out[1]) == pytest.approx(0.0, abs=1e-6)


def test_whitened_l2_by_hand_and_needs_scales():
    pred, obs, scale = torch.tensor([[1.0, 4.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([1.0, 2.0])
    assert float(OBJECTIVES.get("whitened-l2")(pred, obs, scale)[0]) == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="scales"):
        OBJECTIVES.get("whitened-l2")(pred, obs, None)


def test_unknown_objective_lists_the_known():
    with pytest.raises(ValueError, match="l2, cosine, whitened-l2"):
        OBJECTIVES.get("l1")


def test_total_variation_by_hand():
    img = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal steps of 1, no vertical change
    assert float(total_variation(img)[0]) == pytest.approx(1.0)
    assert float(total_variation(torch.ones(1, 1, 4, 4))[0]) == 0.0
    assert math.isclose(float(total_variation(img.transpose(-1, -2))[0]), 1.0)
