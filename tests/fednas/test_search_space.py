import pytest
from pydantic import ValidationError

from fednas.search_space import PRIMITIVES, SupernetSpec, edges_per_cell, reduction_cells, spec_for_paper_p


def test_primitives_are_the_papers_eight():
    assert set(PRIMITIVES) == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                               "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}


@pytest.mark.parametrize("nodes,edges", [(1, 2), (2, 5), (4, 14), (8, 44)])
def test_edges_per_cell(nodes, edges):
    assert edges_per_cell(nodes) == edges


def test_reduction_cells_follow_darts():
    assert reduction_cells(8) == (2, 5)
    assert reduction_cells(3) == (1, 2)
    assert reduction_cells(2) == ()


@pytest.mark.parametrize("kwargs,count", [
    ({}, 224),                                              # shared, 4 nodes: 2 x 14 x 8
    ({"alpha_sharing": "per-cell", "cells": 8}, 896),       # 8 x 14 x 8
    ({"alpha_sharing": "per-cell", "cells": 8, "nodes": 8}, 2816),
    ({"cells": 2}, 112),                                     # no reduction cell: only 'normal'
])
def test_alpha_count_formula(kwargs, count):
    spec = SupernetSpec(**kwargs)
    assert spec.alpha_count() == count
    assert spec.alpha_count() == len(spec.alpha_groups()) * edges_per_cell(spec.nodes) * len(spec.primitives)


def test_paper_p_mapping_reaches_p_256_within_five_percent():
    """P = 32 … 256 (the paper's Tables 1 and 3): α within 5% of P²/2, P = 256 included (32,768 entries, not a
    smaller network under its label), each a valid run config (cells ≤ 64)."""
    for p in (32, 64, 96, 128, 256):
        spec = spec_for_paper_p(p)
        assert abs(spec.alpha_count() - p * p / 2) / (p * p / 2) < 0.05, (p, spec.alpha_count())
        assert 8 <= spec.nodes <= 10 and spec.cells <= 64
    assert spec_for_paper_p(256).alpha_count() == 63 * edges_per_cell(10) * 8 == 32_760
    assert spec_for_paper_p(64).alpha_count() > 784


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValidationError, match="elu, tanh, sigmoid, relu"):
        SupernetSpec(activation="gelu")
