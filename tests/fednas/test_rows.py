"""Row weights (fednas.rows): R weight sets at once, the same function as R separate evaluations, to the second
derivative the Δθ attacks take."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fednas.fastnet import FastSearchNet
from fednas.rows import channels_last_throughout, row_conv2d, row_linear, twice_differentiable_conv2d
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet

ROWS, BATCH = 3, 2
# (in, out, kernel, stride, padding, dilation, groups, size): every convolution the supernet holds
GEOMETRIES = [
    pytest.param(6, 6, 3, 1, 1, 1, 6, 7, id="depthwise-3x3"),
    pytest.param(6, 6, 5, 2, 2, 1, 6, 8, id="depthwise-5x5-stride2"),
    pytest.param(6, 6, 3, 1, 2, 2, 6, 7, id="dilated-3x3"),
    pytest.param(6, 6, 5, 2, 4, 2, 6, 9, id="dilated-5x5-stride2"),
    pytest.param(8, 8, 1, 1, 0, 1, 2, 5, id="pointwise-grouped"),
    pytest.param(8, 4, 1, 2, 0, 1, 1, 6, id="pointwise-stride2"),
    pytest.param(1, 6, 3, 2, 1, 1, 1, 7, id="stem"),
]


def _reference(x, w, geometry):
    """Row by row with F.conv2d (PyTorch's own double backward)."""
    s, p, d, g = geometry
    parts = x.view(ROWS, x.shape[0] // ROWS, *x.shape[1:])
    return torch.cat([F.conv2d(parts[r], w[r], None, s, p, d, g) for r in range(ROWS)])


def _second_order(conv, x, w):
    """∂/∂(x, w) of a function of both first gradients of a nonlinear loss: what the attacks differentiate."""
    loss = conv(x, w).sin().sum()
    gx, gw = torch.autograd.grad(loss, [x, w], create_graph=True)
    return loss, gx, gw, torch.autograd.grad((gw ** 2).sum() + (gx ** 3).sum(), [x, w])


# 1: the Δθ inversion's rows (one sample, kept NCHW), and the same through the previous channels-last layout
@pytest.mark.parametrize(("batch", "layout"), [(BATCH, contextlib.nullcontext), (1, contextlib.nullcontext),
                                               (1, channels_last_throughout)],
                         ids=["batch-2", "batch-1", "batch-1-channels-last"])
@pytest.mark.parametrize(("cin", "cout", "k", "s", "p", "d", "g", "size"), GEOMETRIES)
def test_row_convolution_equals_one_convolution_per_row_to_the_second_derivative(cin, cout, k, s, p, d, g, size,
                                                                                  batch, layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS * batch, cin, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(ROWS, cout, cin // g, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    with layout():
        ours = _second_order(lambda a, b: row_conv2d(a, b, s, p, d, g), x, w)
    reference = _second_order(lambda a, b: _reference(a, b, (s, p, d, g)), x, w)
    for mine, theirs in zip([ours[0], ours[1], ours[2], *ours[3]], [reference[0], reference[1], reference[2],
                                                                      *reference[3]], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_twice_differentiable_convolution_without_rows_is_f_conv2d():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ours = _second_order(lambda a, b: twice_differentiable_conv2d(a, b, 2, 4, 2, 4), x, w)
    reference = _second_order(lambda a, b: F.conv2d(a, b, None, 2, 4, 2, 4), x, w)
    for mine, theirs in zip(ours[3], reference[3], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_row_linear_is_one_linear_layer_per_row():
    gen = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(ROWS * BATCH, 5, generator=gen), torch.randn(ROWS, 3, 5, generator=gen),
               torch.randn(ROWS, 3, generator=gen))
    expected = torch.cat([F.linear(x[r * BATCH:(r + 1) * BATCH], w[r], b[r]) for r in range(ROWS)])
    torch.testing.assert_close(row_linear(x, w, b), expected)


def test_a_batch_that_does_not_split_into_rows_is_refused():
    with pytest.raises(ValueError, match="cannot be split into 3 rows"):
        row_conv2d(torch.zeros(4, 2, 5, 5), torch.zeros(3, 2, 1, 3, 3), 1, 1, 1, 2)


@pytest.mark.parametrize("batch", [BATCH, 1], ids=["batch-2", "batch-1"])
def test_fast_supernet_with_row_weights_is_every_row_evaluated_on_its_own(batch):
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=2, alpha_sharing="per-cell")
    model = build_supernet(spec, (0.5,), (0.25,), torch.Generator().manual_seed(3)).double()
    gen = torch.Generator().manual_seed(4)
    theta = {n: p.detach() + 0.1 * torch.randn(ROWS, *p.shape, generator=gen, dtype=torch.float64)
             for n, p in model.named_parameters() if not n.startswith("alphas.")}
    alphas = {g: torch.randn(ROWS * batch, *spec.alpha_shape(), generator=gen, dtype=torch.float64)
              for g in spec.alpha_groups()}
    x = torch.rand(ROWS * batch, 1, 8, 8, generator=gen, dtype=torch.float64)
    rows = functional_call(FastSearchNet(model), {"model." + n: v for n, v in theta.items()}, (x,), {"alphas": alphas})
    for r in range(ROWS):
        sl = slice(r * batch, (r + 1) * batch)
        alone = functional_call(model, {n: v[r] for n, v in theta.items()}, (x[sl],),
                                {"alphas": {g: a[sl] for g, a in alphas.items()}})
        torch.testing.assert_close(rows[sl], alone, rtol=1e-10, atol=1e-12)
