import numpy as np
import pytest
import torch

from fednas.batches import BatchSampler, ImageSet
from fednas.search import LocalSearchConfig, local_search, resolve_steps, search_schedule
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet


def toy_sets(n=16):
    g = torch.Generator().manual_seed(3)
    images = (torch.rand(2 * n, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (2 * n,), generator=g)
    ids = np.arange(2 * n)
    return ImageSet.take(images, labels, ids[:n]), ImageSet.take(images, labels, ids[n:])


def model():
    return build_supernet(SupernetSpec(channels=4, nodes=2), (0.5,), (0.25,), torch.Generator().manual_seed(0))


def test_one_sgd_alpha_step_is_minus_lr_times_gradient():
    theta_set, alpha_set = toy_sets()
    net = model()
    cfg = LocalSearchConfig(theta_steps=0, alpha_steps=1, alpha_batch_size=2, alpha_lr=0.5)
    before = {g: a.detach().clone() for g, a in net.alphas.items()}
    # the batch the search will draw: same generator, same sampler
    positions = next(BatchSampler(len(alpha_set), 2, torch.Generator().manual_seed(11)))
    x, y = alpha_set.batch(positions, "cpu")
    reference = model()
    reference.train()
    loss = torch.nn.functional.cross_entropy(reference(x), y)
    grads = torch.autograd.grad(loss, reference.alpha_parameters())
    result = local_search(net, theta_set, alpha_set, cfg, torch.Generator().manual_seed(11))
    for (g, a), grad in zip(net.alphas.items(), grads):
        torch.testing.assert_close(a.detach() - before[g], -0.5 * grad, rtol=1e-5, atol=1e-9)
    assert result.alpha_batches == [tuple(int(i) for i in alpha_set.ids[positions.numpy()])]


def test_alpha_steps_leave_theta_and_theta_steps_leave_alpha():
    theta_set, alpha_set = toy_sets()
    net = model()
    theta0 = [p.detach().clone() for p in net.weight_parameters()]
    local_search(net, theta_set, alpha_set, LocalSearchConfig(theta_steps=0, alpha_steps=2, alpha_batch_size=2),
                 torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(theta0, net.weight_parameters()))
    alpha0 = [a.detach().clone() for a in net.alpha_parameters()]
    local_search(net, theta_set, alpha_set, LocalSearchConfig(theta_steps=2, alpha_steps=0, theta_batch_size=4),
                 torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(alpha0, net.alpha_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(theta0, net.weight_parameters()))


def test_adam_preset_is_darts():
    cfg = LocalSearchConfig(alpha_optimizer="adam")
    assert cfg.resolved_alpha_lr() == 3e-4 and cfg.resolved_alpha_weight_decay() == 1e-3
    sgd = LocalSearchConfig()
    assert sgd.resolved_alpha_weight_decay() == 0.0
    with pytest.raises(ValueError, match="sgd, adam"):
        LocalSearchConfig(alpha_optimizer="rmsprop")


def test_schedule_orders():
    assert search_schedule(2, 2, "interleaved") == ["alpha", "theta", "alpha", "theta"]
    assert search_schedule(3, 1, "interleaved") == ["alpha", "theta", "theta", "theta"]
    assert search_schedule(1, 2, "theta-first") == ["theta", "alpha", "alpha"]
    assert search_schedule(1, 1, "alpha-first") == ["alpha", "theta"]


def test_epochs_override_steps():
    assert resolve_steps(5, 0, 100, 10) == 5
    assert resolve_steps(5, 2, 100, 10) == 20


def test_batch_sampler_is_seeded_and_covers_an_epoch():
    a = BatchSampler(10, 3, torch.Generator().manual_seed(1))
    b = BatchSampler(10, 3, torch.Generator().manual_seed(1))
    first = [next(a) for _ in range(3)]
    assert all(torch.equal(x, next(b)) for x in first)
    assert len(set(torch.cat(first).tolist())) == 9
    with pytest.raises(ValueError, match="larger than the split"):
        BatchSampler(2, 3, torch.Generator())
