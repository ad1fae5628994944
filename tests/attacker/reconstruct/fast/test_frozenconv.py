"""FrozenConv: the same convolution as F.conv2d, with the same first and second derivatives in the input."""

import pytest
import torch
import torch.nn.functional as F

from attacker.reconstruct.fast.frozenconv import FrozenConv
from attacker.reconstruct.fast.layout import repeat_channels

# (channels in, channels out, kernel, stride, padding, dilation, groups, image side)
GEOMETRIES = [
    (6, 6, 5, 1, 2, 1, 6, 7),     # depthwise 5x5
    (6, 6, 3, 2, 2, 2, 6, 7),     # dilated, strided depthwise (zero-interleaved transpose), odd size
    (6, 6, 5, 2, 2, 1, 6, 8),     # strided depthwise (oneDNN's transposed kernel)
    (6, 4, 1, 1, 0, 1, 2, 5),     # pointwise grouped by edge
    (1, 4, 3, 2, 1, 1, 1, 9),     # stem-like dense strided
]


@pytest.mark.parametrize("c_in,c_out,k,stride,pad,dil,groups,size", GEOMETRIES)
def test_frozen_conv_matches_conv2d_to_second_order(c_in, c_out, k, stride, pad, dil, groups, size):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(c_out, c_in // groups, k, k, generator=g)
    x = torch.randn(2, c_in, size, size, generator=g).requires_grad_()
    conv = FrozenConv(w, stride, pad, dil, groups)

    def reference(t):
        return F.conv2d(t, w, None, stride, pad, dil, groups)

    y_fast, y_ref = conv(x), reference(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    v = torch.randn(y_ref.shape, generator=g).requires_grad_()
    gx_fast = torch.autograd.grad(y_fast, x, v, create_graph=True)[0]
    gx_ref = torch.autograd.grad(y_ref, x, v, create_graph=True)[0]
    torch.testing.assert_close(gx_fast, gx_ref, rtol=1e-5, atol=1e-5)
    u = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(torch.autograd.grad((gx_fast * u).sum(), v)[0],
                               torch.autograd.grad((gx_ref * u).sum(), v)[0], rtol=1e-5, atol=1e-5)


def test_repeat_channels_is_channels_last_repeat():
    x = torch.randn(2, 3, 4, 5)
    out = repeat_channels(x, 3)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, x.repeat(1, 3, 1, 1))


def test_padding_beyond_the_kernel_reach_is_refused():
    with pytest.raises(ValueError, match="padding"):
        FrozenConv(torch.randn(2, 2, 3, 3), padding=3)
