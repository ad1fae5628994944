import pytest
import torch

from fednas.methods import pdarts
from fednas.methods.child import OFF
from fednas.methods.knobs import MethodKnobs
from fednas.methods.server import pdarts_transition
from fednas.search_space import PRIMITIVES, SupernetSpec, edges_per_cell
from fednas.supernet import MixedOp, build_supernet

KNOBS = MethodKnobs(search_method="pdarts")   # keep 5 then 3, +2 cells per stage, skip dropout 0, 0.4, 0.7


def test_rounds_split_evenly_into_stages_and_the_dropout_decays():
    assert [pdarts.stage_of(KNOBS, r, 6) for r in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [pdarts.skip_rate(KNOBS, r, 6) for r in (3, 4, 5, 6)] == [0.4, 0.2, 0.7, 0.35]
    assert pdarts.stage_spec(SupernetSpec(cells=3), KNOBS, 2).cells == 7


def test_each_transition_prunes_to_the_expected_operations_per_edge():
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=3, nodes=3)
    model = build_supernet(spec, (0.1,), (0.3,), torch.Generator().manual_seed(0))
    counts = []
    for next_round in (3, 5):   # 6 rounds: the stages start at rounds 3 and 5
        new = pdarts_transition(model, spec, KNOBS, 0, next_round, 6, ((0.1,), (0.3,)))
        assert new is not None and new.spec.cells == model.spec.cells + 2
        counts.append({g: pdarts.kept_counts(a.detach(), spec.primitives) for g, a in new.alphas.items()})
        none = spec.primitives.index("none")
        assert all(bool((a[:, none] > OFF / 2).all()) for a in new.alphas.values()), "'none' stays"
        model = new
    rows = edges_per_cell(3)
    assert counts == [{"normal": [5] * rows, "reduce": [5] * rows}, {"normal": [3] * rows, "reduce": [3] * rows}]
    assert pdarts_transition(model, spec, KNOBS, 0, 6, 6, ((0.1,), (0.3,))) is None


def test_pruning_keeps_the_strongest_live_operations():
    alpha = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    alpha[0, 7] = OFF   # already pruned: never revived
    kept = pdarts.prune(alpha, 3, PRIMITIVES, torch.Generator().manual_seed(0))
    assert (kept > OFF / 2).nonzero()[:, 1].tolist() == [0, 4, 5, 6]


def test_pruned_operations_are_skipped_without_changing_the_function():
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=2, nodes=2)
    model = build_supernet(spec, (0.1,), (0.3,), torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(pdarts.prune(a.float(), 2, spec.primitives, torch.Generator().manual_seed(1)).double())
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    full = model(x)
    pdarts.mark_pruned(model)
    assert sum(len(m.off) for m in model.modules() if isinstance(m, MixedOp)) > 0
    skipped = model(x)
    torch.testing.assert_close(skipped, full, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(skipped.square().sum(), list(model.alphas.values()))
    for g, a in zip(grads, model.alphas.values(), strict=True):
        assert torch.all(g[a < OFF / 2] == 0)


def test_the_final_cell_keeps_at_most_the_cap_of_skip_connections():
    nodes, skip = 4, PRIMITIVES.index("skip_connect")
    weights = torch.full((edges_per_cell(nodes), len(PRIMITIVES)), 0.05)
    weights[:, skip] = torch.linspace(0.9, 0.5, edges_per_cell(nodes))   # skip wins everywhere
    capped = pdarts.cap_skips(weights, nodes, PRIMITIVES, 2)
    assert sum(op == "skip_connect" for op, _ in capped.edges) == 2
    assert sum(op == "skip_connect" for op, _ in pdarts.cap_skips(weights, nodes, PRIMITIVES, 8).edges) == 8


def test_skip_dropout_is_seeded_and_only_while_training():
    spec = SupernetSpec(image_size=8, stem_stride=1, channels=4, cells=1, nodes=1)
    model = build_supernet(spec, (0.1,), (0.3,), torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 8, 8)
    reference = model(x)
    pdarts.set_skip_dropout(model, 0.5, torch.Generator().manual_seed(3))
    dropped = model(x)
    pdarts.set_skip_dropout(model, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(model(x), dropped) and not torch.equal(dropped, reference)
    model.eval()
    torch.testing.assert_close(model(x), reference)


@pytest.mark.parametrize(("keep", "rates"), [("3,5", "0,0,0"), ("5,3", "0.1,0.2"), ("5", "1.0,0")])
def test_bad_schedules_are_one_line_errors(keep, rates):
    with pytest.raises(ValueError, match="pdarts"):
        MethodKnobs(search_method="pdarts", pdarts_keep=keep, pdarts_skip_dropout=rates)
