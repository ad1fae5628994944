"""The attack's fast path computes the same function (and the same second derivatives) as the supernet."""

import pytest
import torch
import torch.nn.functional as F

from attacker.reconstruct.fast.fastnet import AvgPool3x3, FastSuperNet
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet

CASES = [
    {},
    {"activation": "tanh", "alpha_sharing": "per-cell", "cells": 4, "nodes": 3},
    {"activation": "sigmoid", "batchnorm": True, "stem_stride": 1},
    {"activation": "relu", "in_channels": 3, "image_size": 32},
]


def nets(spec, count):
    out = []
    for seed in range(count):
        net = build_supernet(spec, (0.5,) * spec.in_channels, (0.25,) * spec.in_channels,
                             torch.Generator().manual_seed(seed))
        out.append(net.requires_grad_(False))
    return out


@pytest.mark.parametrize("kw", CASES)
def test_fast_path_matches_the_reference(kw):
    spec = SupernetSpec(channels=4, **kw)
    ref = nets(spec, 1)[0]
    ref.train(spec.batchnorm)
    fast = FastSuperNet(ref)
    n = 3
    g0 = torch.Generator().manual_seed(1)
    x = torch.rand(n, spec.in_channels, spec.image_size, spec.image_size, generator=g0).requires_grad_()
    alphas = {g: (a.detach() + 0.1 * torch.randn(n, *a.shape, generator=g0)).requires_grad_()
              for g, a in ref.alphas.items()}
    y = torch.arange(n) % 10

    def second_order(net):
        grads = torch.autograd.grad(F.cross_entropy(net(x, alphas), y), list(alphas.values()), create_graph=True)
        return torch.autograd.grad(sum((g ** 2).sum() for g in grads), x)[0]

    torch.testing.assert_close(fast(x, alphas), ref(x, alphas), rtol=1e-5, atol=1e-5)
    a, b = second_order(fast), second_order(ref)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_batchnorm_with_running_statistics_matches_the_reference():
    spec = SupernetSpec(channels=4, batchnorm=True)
    ref = nets(spec, 1)[0]
    ref.train()
    ref(torch.rand(8, 1, 28, 28))  # running statistics differ per edge
    ref.eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(FastSuperNet(ref)(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,size", [(1, 7), (2, 8), (2, 7)])
def test_average_pool_matches_torch(stride, size):
    x = torch.rand(2, 3, size, size)
    ref = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    torch.testing.assert_close(AvgPool3x3(stride)(x), ref, rtol=1e-6, atol=1e-6)
