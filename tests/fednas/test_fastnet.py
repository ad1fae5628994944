"""The local search's fast path is the same function as the plain supernet: outputs, losses and the gradients
of θ and α (per-sample α too), in float64, on every supernet geometry the tests use; and a whole local search
gives the same model either way."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fednas.batches import ImageSet
from fednas.convolution import dilated_conv2d
from fednas.fastnet import FastSearchNet, frozen_weights, search_net
from fednas.search import LocalSearchConfig, local_search
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet

GEOMETRIES = {
    "default": {},
    "per-cell, 2 nodes": {"alpha_sharing": "per-cell", "cells": 3, "nodes": 2, "channels": 4},
    "tanh, stem stride 1, 8x8": {"activation": "tanh", "stem_stride": 1, "image_size": 8, "channels": 4},
    "relu, 5 cells": {"activation": "relu", "cells": 5, "nodes": 3, "channels": 4},
    "sigmoid, rgb 32x32": {"activation": "sigmoid", "in_channels": 3, "image_size": 32, "channels": 4},
    "odd sizes (odd resolutions after reduction)": {"image_size": 22, "stem_stride": 1, "channels": 4, "nodes": 3},
}


def pair(knobs, dtype=torch.float64):
    spec = SupernetSpec(**knobs)
    model = build_supernet(spec, (0.4,) * spec.in_channels, (0.3,) * spec.in_channels,
                           torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=dtype))
    return model, FastSearchNet(model)


def batch(spec_knobs, n=4, dtype=torch.float64):
    spec = SupernetSpec(**spec_knobs)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, spec.in_channels, spec.image_size, spec.image_size, generator=g, dtype=dtype)
    return x, torch.randint(0, spec.num_classes, (n,), generator=g)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_logits_losses_and_every_gradient_match_the_plain_supernet(name):
    knobs = GEOMETRIES[name]
    model, fast = pair(knobs)
    x, y = batch(knobs)
    params = model.weight_parameters() + model.alpha_parameters()
    plain_loss = F.cross_entropy(model(x), y)
    fast_loss = F.cross_entropy(fast(x), y)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(fast_loss, params), torch.autograd.grad(plain_loss, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_per_sample_architectures_and_frozen_weights():
    model, fast = pair(GEOMETRIES["per-cell, 2 nodes"])
    x, y = batch(GEOMETRIES["per-cell, 2 nodes"])
    per = {g: a.detach().unsqueeze(0).expand(len(x), *a.shape).clone().requires_grad_()
           for g, a in model.alphas.items()}
    expected = torch.autograd.grad(F.cross_entropy(model(x, per), y, reduction="sum"), list(per.values()))
    with frozen_weights(fast):
        out = fast(x, per)
        got = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), list(per.values()))
        assert not out.grad_fn is None
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("size,kernel,stride,padding", [(14, 3, 1, 2), (14, 5, 1, 4), (7, 5, 1, 4), (14, 5, 2, 4),
                                                        (7, 3, 2, 2), (9, 3, 1, 2), (4, 5, 1, 4)])
def test_dilated_convolutions_without_a_dilated_kernel(size, kernel, stride, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, kernel, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    ours = dilated_conv2d(x, w, stride, padding, 2, 6)
    ref = F.conv2d(x, w, None, stride, padding, 2, 6)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(ours, (x, w), grad), torch.autograd.grad(ref, (x, w), grad), strict=True):
        torch.testing.assert_close(a, b)


def test_a_whole_local_search_gives_the_same_model_on_either_path():
    knobs = {"channels": 4, "nodes": 3}
    results = []
    for fast in (True, False):
        spec = SupernetSpec(**knobs)
        model = build_supernet(spec, (0.4,), (0.3,), torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(3)
        data = ImageSet(torch.randint(0, 256, (40, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (40,), generator=g), np.arange(40))
        cfg = LocalSearchConfig(theta_steps=4, alpha_steps=2, theta_batch_size=8, alpha_batch_size=2,
                                fast_search=fast)
        local_search(model, data, data, cfg, torch.Generator().manual_seed(4))
        results.append(model.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-5)


def test_batchnorm_keeps_the_plain_supernet():
    spec = SupernetSpec(batchnorm=True, channels=4, nodes=2)
    model = build_supernet(spec, (0.4,), (0.3,), torch.Generator().manual_seed(0))
    assert search_net(model) is model and isinstance(search_net(build_supernet(
        SupernetSpec(channels=4, nodes=2), (0.4,), (0.3,), torch.Generator().manual_seed(0))), FastSearchNet)
    with pytest.raises(ValueError, match="BatchNorm"):
        FastSearchNet(model)
