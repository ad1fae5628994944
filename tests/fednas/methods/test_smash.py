import torch

from fednas.methods.child import uniform_child
from fednas.methods.smash import HyperNet, generated_slots, materialise, smash_forward
from fednas.search_space import SupernetSpec
from fednas.supernet import MixedOp, build_supernet

SPEC = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=2)


def _model():
    return build_supernet(SPEC, (0.1,), (0.3,), torch.Generator().manual_seed(0))


def test_generated_weights_have_the_shapes_of_the_sampled_architecture():
    model = _model()
    hyper = HyperNet(model, hidden=4)
    hyper.reset_parameters(model, torch.Generator().manual_seed(1))
    child = uniform_child(SPEC, torch.Generator().manual_seed(2))
    generated = hyper.generate(child)
    expected = {}
    for c, cell in enumerate(model.cells):
        offset = 0
        for node, pairs in enumerate(child[SPEC.alpha_group(c)]):
            for src, op in pairs:
                edge = cell.edges[offset + src]
                assert isinstance(edge, MixedOp)
                for name, module in edge.ops[op].named_modules():
                    if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
                        expected[f"cells.{c}.edges.{offset + src}.ops.{op}.{name}.weight"] = tuple(module.weight.shape)
            offset += 2 + node
    assert {k: tuple(v.shape) for k, v in generated.items()} == expected
    assert set(expected) <= set(generated_slots(model))


def test_the_hypernetwork_learns_through_the_generated_weights():
    model = _model()
    hyper = HyperNet(model, hidden=4)
    hyper.reset_parameters(model, torch.Generator().manual_seed(1))
    child = uniform_child(SPEC, torch.Generator().manual_seed(2))
    loss = smash_forward(model, hyper, torch.rand(2, 1, 8, 8), child).square().sum()
    loss.backward()
    assert hyper.head.grad is not None and hyper.head.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n in hyper.generate(child))
    materialise(model, hyper, child)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), smash_forward(model, hyper, x, child), rtol=1e-5, atol=1e-5)
