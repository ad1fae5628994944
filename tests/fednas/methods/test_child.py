import pytest
import torch

from fednas.methods.child import child_forward, encode, genotype, uniform_child
from fednas.search_space import SupernetSpec
from fednas.supernet import build_supernet


@pytest.mark.parametrize("sharing", ["shared", "per-cell"])
def test_a_child_is_the_supernet_under_its_encoded_alpha(sharing):
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=3, alpha_sharing=sharing)
    model = build_supernet(spec, (0.1,), (0.3,), torch.Generator().manual_seed(0)).double()
    child = uniform_child(spec, torch.Generator().manual_seed(1))
    alphas = {g: a.double() for g, a in encode(child, spec).items()}
    none = spec.primitives.index("none")
    for a in alphas.values():
        weights = torch.softmax(a, dim=-1)
        chosen = weights[:, none] < 1
        assert torch.equal(weights[~chosen, none], torch.ones(int((~chosen).sum()), dtype=weights.dtype))
        assert torch.equal((weights[chosen] * 2).sort(dim=-1).values[:, -2:], torch.ones(int(chosen.sum()), 2,
                                                                                          dtype=weights.dtype)), \
            "a chosen edge is exactly one half on its operation and one half on none"
        assert int(chosen.sum()) == 2 * spec.nodes
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(child_forward(model, x, child), model(x, alphas), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        for g, a in alphas.items():
            model.alphas[g].copy_(a)
    assert model.genotype() == genotype(child, spec)


def test_uniform_children_pick_two_distinct_inputs_and_real_operations():
    spec = SupernetSpec(nodes=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        for nodes in uniform_child(spec, gen).values():
            for node, ((a, op_a), (b, op_b)) in enumerate(nodes):
                assert a != b and max(a, b) < 2 + node
                assert "none" not in (spec.primitives[op_a], spec.primitives[op_b])



def test_decode_inverts_encode():
    from fednas.methods.child import decode

    spec = SupernetSpec(nodes=3, cells=4, alpha_sharing="per-cell")
    child = uniform_child(spec, torch.Generator().manual_seed(3))
    def canonical(c):   # a node's two pairs in input order (an encoding keeps no order)
        return {g: tuple(tuple(sorted(pairs)) for pairs in nodes) for g, nodes in c.items()}

    assert canonical(decode(encode(child, spec), spec)) == canonical(child)
    with pytest.raises(ValueError, match="not a child's encoding"):
        decode({g: torch.zeros(spec.alpha_shape()) for g in spec.alpha_groups()}, spec)
