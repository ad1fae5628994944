"""The channels-last autograd pairs: same values and derivatives as PyTorch's own ops, channels-last in every
derivative order."""

import torch
import torch.nn.functional as F

from attacker.reconstruct.fast.layout import cat_channels, channels_last, shift_up_left, split_channels

CL = torch.channels_last


def _inputs(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [channels_last(torch.randn(*s, generator=g, dtype=torch.float64)).requires_grad_() for s in shapes]


def test_cat_and_split_match_torch_to_second_order():
    a, b = _inputs((2, 3, 5, 4), (2, 2, 5, 4))
    out = cat_channels([a, b])
    torch.testing.assert_close(out, torch.cat([a, b], 1))
    assert out.is_contiguous(memory_format=CL)
    parts = split_channels(out, [1, 4])
    for p, q in zip(parts, torch.cat([a, b], 1).split([1, 4], 1), strict=True):
        torch.testing.assert_close(p, q)
        assert p.is_contiguous(memory_format=CL)
    assert torch.autograd.gradcheck(lambda x, y: cat_channels([x, y]) ** 2, (a, b))
    assert torch.autograd.gradgradcheck(lambda x, y: cat_channels([x, y]) ** 2, (a, b))
    assert torch.autograd.gradgradcheck(lambda x: [p ** 2 for p in split_channels(x, [2, 1, 2])],
                                        (out.detach().requires_grad_(),))


def test_shift_matches_padded_slice_to_second_order():
    (x,) = _inputs((2, 3, 5, 4))
    torch.testing.assert_close(shift_up_left(x), F.pad(x, (0, 1, 0, 1))[..., 1:, 1:])
    assert torch.autograd.gradgradcheck(lambda t: shift_up_left(t) ** 2, (x,))


def test_gradients_of_every_order_stay_channels_last():
    a, b = _inputs((2, 3, 5, 4), (2, 2, 5, 4))
    y = shift_up_left(cat_channels([a, b]))
    first = split_channels(y, [2, 3])[1]
    (ga,) = torch.autograd.grad((first[:, :1] * first[:, 1:] ** 2).sum(), a, create_graph=True)
    assert ga.is_contiguous(memory_format=CL)
    (gb,) = torch.autograd.grad((ga ** 2).sum(), b)
    assert gb.is_contiguous(memory_format=CL)
    assert gb.abs().sum() > 0
