import torch

from fednas.batches import ImageSet
from fednas.methods import rounds
from fednas.methods.child import uniform_child
from fednas.methods.knobs import MethodKnobs
from fednas.methods.smash import HyperNet, generated_slots, materialise, smash_forward
from fednas.search import LocalSearchConfig
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


def test_ranking_reads_d_alpha_only(monkeypatch, data_root, mnist_or_digits):
    from fednas.data import load_dataset
    from fednas.search_space import SupernetSpec as Spec

    data = load_dataset(mnist_or_digits, str(data_root))
    spec = Spec(image_size=data.image_size, channels=4, cells=3, nodes=2)
    model = build_supernet(spec, data.mean, data.std, torch.Generator().manual_seed(0))
    knobs = MethodKnobs(search_method="smash", smash_candidates=2, smash_rank_samples=10, smash_hidden=4)
    theta = ImageSet.take(data.train_images, data.train_labels, torch.arange(0, 40).numpy())
    alpha = ImageSet.take(data.train_images, data.train_labels, torch.arange(100, 140).numpy())
    seen = []
    real_rank = rounds.rank
    monkeypatch.setattr(rounds, "rank", lambda m, h, c, s: seen.append(set(s.ids.tolist())) or real_rank(m, h, c, s))
    out = rounds.smash_round(rounds.RoundInputs(
        knobs, LocalSearchConfig(theta_steps=2, theta_batch_size=8), 0, 1, 2, model,
        rounds.smash_extra(model, knobs, 0), theta, alpha, torch.Generator().manual_seed(0)))
    assert len(seen) == 1 and len(seen[0]) == 10 and seen[0] <= set(alpha.ids.tolist())
    assert out.extra["rank:scores"].shape == (2,)
    assert set(out.result.alpha_batches[0]) == seen[0], "the ranked D^α images are the ones logged as used"
