import pytest
import torch
import torch.nn.functional as F

from fednas.operations import ACTIVATIONS, OPS
from fednas.search_space import PRIMITIVES, SupernetSpec
from fednas.supernet import build_supernet, derive_cell


def small_spec(**kw):
    base = {"channels": 4, "cells": 3, "nodes": 2}
    base.update(kw)
    return SupernetSpec(**base)


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
@pytest.mark.parametrize("sharing", ["shared", "per-cell"])
def test_forward_backward_shapes(activation, sharing):
    spec = small_spec(activation=activation, alpha_sharing=sharing)
    model = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (2, 10)
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert set(model.alphas) == set(spec.alpha_groups())
    for alpha in model.alpha_parameters():
        assert alpha.grad is not None and alpha.grad.shape == spec.alpha_shape()
        assert alpha.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.weight_parameters())


def test_colour_input_and_no_batchnorm():
    spec = small_spec(in_channels=3, image_size=32, num_classes=100, batchnorm=False)
    model = build_supernet(spec, (0.5,) * 3, (0.25,) * 3, torch.Generator().manual_seed(0))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_same_seed_same_model_and_device_is_passed_in():
    spec = small_spec()
    a = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(7), device="cpu")
    b = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(7), device=torch.device("cpu"))
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)
    c = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(8))
    assert not torch.equal(a.alphas["normal"], c.alphas["normal"])


def test_genotype_from_hand_made_alpha():
    # nodes=2: rows 0,1 feed node 0 (inputs 0,1); rows 2,3,4 feed node 1 (inputs 0,1,2)
    idx = {p: i for i, p in enumerate(PRIMITIVES)}
    w = torch.full((5, len(PRIMITIVES)), 0.01)
    w[0, idx["sep_conv_3x3"]] = 0.6
    w[1, idx["skip_connect"]] = 0.5
    w[2, idx["none"]] = 0.9          # 'none' never wins, so input 0 loses for node 1
    w[3, idx["max_pool_3x3"]] = 0.7
    w[4, idx["dil_conv_5x5"]] = 0.8
    cell = derive_cell(w, 2, PRIMITIVES)
    assert cell.edges == (("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 1), ("dil_conv_5x5", 2))
    assert cell.concat == (2, 3)


def test_model_genotype_has_two_edges_per_node_and_no_none():
    spec = small_spec(nodes=4)
    model = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    geno = model.genotype()
    for group in spec.alpha_groups():
        cell = geno.cell(group)
        assert len(cell.edges) == 2 * spec.nodes
        assert all(op != "none" for op, _ in cell.edges)
    with pytest.raises(ValueError, match="known: normal, reduce"):
        geno.cell("cell9")


def test_unknown_operation_names_the_known_ones():
    with pytest.raises(ValueError, match="sep_conv_3x3"):
        OPS.get("conv_7x7")


def test_per_sample_alphas_give_per_sample_gradients():
    spec = small_spec()
    model = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 4, 7])
    expanded = {g: a.detach().expand(3, *a.shape).clone().requires_grad_() for g, a in model.alphas.items()}
    loss = F.cross_entropy(model(x, expanded), y, reduction="sum")
    per_sample = torch.autograd.grad(loss, list(expanded.values()))
    for n in range(3):
        model.zero_grad()
        F.cross_entropy(model(x[n:n + 1]), y[n:n + 1]).backward()
        for grads, alpha in zip(per_sample, model.alpha_parameters()):
            torch.testing.assert_close(grads[n], alpha.grad, rtol=1e-4, atol=1e-7)
