"""DP-SGD on α, the L2 penalty and input noise: each phase does exactly what it says."""

import numpy as np
import pytest
import torch

from app.config import parse_app
from defenses.alpha import AlphaStep, DPSGDAlpha, InputNoise, L2Alpha
from defenses.config import DefenseConfig, check_compatible
from fednas.batches import ImageSet
from fednas.schema import ConfigError
from fednas.search import LocalSearchConfig, local_search
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet


def net(seed=0, **spec):
    model = build_supernet(SupernetSpec(channels=4, nodes=2, **spec), (0.5,), (0.25,),
                           torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_clipping_bounds_every_per_sample_alpha_gradient_and_leaves_small_ones_alone():
    model, (x, y) = net(), batch()
    dp = DPSGDAlpha(noise_multiplier=0.0, clip=1.0)
    _, _, grads = dp.per_sample_gradients(model, x, y)
    before = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    clip = float(before.median())                      # half the samples above, half below
    dp = DPSGDAlpha(noise_multiplier=0.0, clip=clip)
    original = {k: v.clone() for k, v in grads.items()}
    norms = dp.per_sample_norms(grads)
    dp.clip_(grads, norms)
    after = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    assert torch.equal(norms, before) and bool((after <= clip * (1 + 1e-5)).all())
    small = before <= clip
    assert small.any() and (~small).any()
    for k in grads:
        torch.testing.assert_close(grads[k][small], original[k][small])


def test_per_sample_gradients_sum_to_the_batch_gradient():
    model, (x, y) = net(), batch()
    _loss, _, per = DPSGDAlpha(0.0, 1.0).per_sample_gradients(model, x, y)
    objective = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    full = torch.autograd.grad(objective, model.alpha_parameters())
    for g, f in zip(per.values(), full, strict=True):
        torch.testing.assert_close(g.sum(0), f, rtol=1e-4, atol=1e-6)


def test_noise_std_is_sigma_times_clip():
    dp = DPSGDAlpha(noise_multiplier=2.0, clip=0.5)
    out = dp.noise({"a": torch.zeros(200_000)}, torch.Generator().manual_seed(3))["a"]
    # std of 200k normal samples: standard error 1/sqrt(2n) ≈ 0.16 %, so 1 % is > 6 standard errors
    assert abs(float(out.std()) - 1.0) < 0.01 and abs(float(out.mean())) < 0.01


def test_l2_penalty_changes_the_alpha_gradient_by_exactly_two_lambda_alpha():
    lam, (x, y) = 0.05, batch()
    updates = {}
    for name, l2 in (("plain", None), ("l2", L2Alpha(lam))):
        model = net()
        start = [a.detach().clone() for a in model.alpha_parameters()]
        opt = torch.optim.SGD(model.alpha_parameters(), lr=1.0)
        AlphaStep(torch.Generator(), l2=l2)(model, opt, x, y)
        updates[name] = [s - a.detach() for s, a in zip(start, model.alpha_parameters(), strict=True)]
    for plain, with_l2, alpha in zip(updates["plain"], updates["l2"], start, strict=True):
        torch.testing.assert_close(with_l2 - plain, 2 * lam * alpha, rtol=1e-4, atol=1e-6)


def test_input_noise_reaches_the_alpha_steps_only():
    zeros = ImageSet(torch.zeros(16, 1, 28, 28, dtype=torch.uint8), torch.zeros(16, dtype=torch.long), np.arange(16))
    model, seen = net(), []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    cfg = LocalSearchConfig(theta_steps=2, alpha_steps=2, alpha_batch_size=8, theta_batch_size=8,
                            search_order="alpha-first", fast_search=False)   # the hook watches the plain forward
    step = AlphaStep(torch.Generator().manual_seed(0), input_noise=InputNoise(0.3))
    local_search(model, zeros, zeros, cfg, torch.Generator().manual_seed(0), alpha_step=step)
    alpha_inputs, theta_inputs = seen[:2], seen[2:]
    assert len(theta_inputs) == 2 and all(bool((t == 0).all()) for t in theta_inputs)
    assert all(abs(float(a.std()) - 0.3) < 0.02 for a in alpha_inputs)


def test_a_dp_step_moves_alpha_by_the_clipped_noisy_mean():
    model, (x, y) = net(), batch()
    start = [a.detach().clone() for a in model.alpha_parameters()]
    opt = torch.optim.SGD(model.alpha_parameters(), lr=1.0)
    AlphaStep(torch.Generator().manual_seed(5), dp=DPSGDAlpha(0.0, 1e-3))(model, opt, x, y)
    moved = torch.sqrt(sum(((s - a.detach()) ** 2).sum() for s, a in zip(start, model.alpha_parameters(),
                                                                         strict=True)))
    assert 0 < float(moved) <= 1e-3 * (1 + 1e-5)      # the mean of vectors of norm ≤ C has norm ≤ C


@pytest.mark.parametrize(("values", "message"), [
    ({"dp-noise-multiplier": -1.0}, "dp-noise-multiplier"),
    ({"dp-clip": 0.0}, "dp-clip"),
    ({"dp-delta": 1.0}, "dp-delta"),
    ({"defenses": "dp-sgd-alpha,nope"}, "unknown defense 'nope'; known: dp-sgd-alpha"),
    ({"defenses": "dp-sgd-alpha,dp-sgd-alpha-paper"}, "choose one"),
    ({"dp-accountant": "moments"}, "rdp, prv"),
])
def test_bad_defense_settings_are_refused_with_the_setting_named(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_app(values)


def test_dp_sgd_with_batch_statistics_is_refused():
    defense = parse_app({"defenses": "dp-sgd-alpha"}).section("defense", DefenseConfig)
    with pytest.raises(ConfigError, match="batchnorm"):
        check_compatible(defense, batchnorm=True)
    check_compatible(defense, batchnorm=False)


def test_the_paper_preset_is_std_point_one_on_the_gradient():
    defense = parse_app({"defenses": "dp-sgd-alpha-paper"}).section("defense", DefenseConfig)
    dp = defense.dp()
    assert dp is not None and dp.noise_multiplier * dp.clip == pytest.approx(0.1)
