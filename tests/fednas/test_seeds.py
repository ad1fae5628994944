"""Every random stream derives from the one run seed; streams are independent and reproducible."""

import numpy as np
import torch

from fednas import seeds


def test_streams_are_distinct_and_reproducible():
    values = {name: getattr(seeds, name) for name in dir(seeds) if name.endswith("_STREAM")}
    torch_streams = {k: v for k, v in values.items() if v < 1000 and not k.startswith("BENCH")}
    assert len(set(torch_streams.values())) == len(torch_streams), torch_streams
    a = seeds.generator(0, seeds.CLIENT_STREAM, 1, 0)
    b = seeds.generator(0, seeds.CLIENT_STREAM, 1, 0)
    c = seeds.generator(0, seeds.CLIENT_STREAM, 1, 1)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=seeds.generator(0, seeds.CLIENT_STREAM, 1, 0)),
                           torch.rand(4, generator=c))


def test_numpy_streams_are_the_seed_sequences_results_were_made_with():
    """The partition and membership streams must keep their values: stored runs and results depend on them."""
    assert np.array_equal(seeds.numpy_rng(5, seeds.PARTITION_STREAM).permutation(10),
                          np.random.default_rng(np.random.SeedSequence([5, 0x5EA4C4])).permutation(10))
    assert np.array_equal(seeds.numpy_rng(5, seeds.MEMBERSHIP_STREAM, 1).permutation(10),
                          np.random.default_rng(np.random.SeedSequence([5, 0xA31A, 1])).permutation(10))


def test_seeded_init_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeds.seeded_init(torch.Generator().manual_seed(9)):
        first = torch.nn.Linear(2, 2).weight.detach().clone()
    assert torch.equal(torch.rand(3), expected)
    with seeds.seeded_init(torch.Generator().manual_seed(9)):
        assert torch.equal(torch.nn.Linear(2, 2).weight, first)
