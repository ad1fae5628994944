"""The search space as data: primitives, the supernet's shape, α groups and genotypes.

Everything here is public knowledge in the threat models: an attacker knows the search space.

Sizing and the paper's network size P
-------------------------------------
The paper states that α has about P²/2 entries for a network of P cells (P from 32 to 256). In DARTS
the α of one cell has ``edges(nodes) * len(primitives)`` entries with ``edges(n) = 2n + n(n-1)/2``
(node i has 2 + i incoming edges). With ``alpha_sharing="shared"`` there is one α for all normal
cells and one for all reduction cells (224 entries at 4 nodes and 8 primitives, whatever the depth).
With ``alpha_sharing="per-cell"`` every cell owns its α, so the count is ``cells * edges * 8``.
:func:`spec_for_paper_p` picks per-cell ``(cells, nodes)`` whose count is closest to P²/2, with cells of DARTS-like
size (8 to 10 nodes) and the depth growing with P: up to 63 cells × 10 nodes, 32,760 entries, for P = 256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fednas.operations import ACTIVATIONS, OPS

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

AlphaSharing = Literal["shared", "per-cell"]
ALPHA_SHARING_MODES: tuple[str, ...] = ("shared", "per-cell")


def edges_per_cell(nodes: int) -> int:
    """Number of mixed edges in a cell with ``nodes`` intermediate nodes."""
    return 2 * nodes + nodes * (nodes - 1) // 2


def reduction_cells(cells: int) -> tuple[int, ...]:
    """Indices of reduction cells: DARTS puts them at 1/3 and 2/3 of the depth (none below 3 cells)."""
    if cells < 3:
        return ()
    return tuple(sorted({cells // 3, 2 * cells // 3}))


class SearchSpaceKnobs(BaseModel):
    """The user-facing size and shape knobs of the supernet (shared by the run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cells: int = Field(3, ge=1, le=64, description="search cells (reduction cells sit at 1/3 and 2/3 of the depth)")
    nodes: int = Field(4, ge=1, le=32, description="intermediate nodes per cell")
    channels: int = Field(8, ge=2, le=1024, description="channels of the first cell (doubled at each reduction)")
    stem_stride: int = Field(2, ge=1, le=2, description="stride of the stem convolution (2: every cell works at "
                                                         "half the input resolution, about 3x cheaper)")
    activation: str = Field("elu", description="activation inside the operations: elu, tanh, sigmoid, relu")
    alpha_sharing: AlphaSharing = Field(
        "shared", description="'shared': one α for normal and one for reduction cells; 'per-cell': one per cell")
    batchnorm: bool = Field(
        False, description="BatchNorm in the stem and (affine=False, as in DARTS search) in the operations; "
                           "needs batches >= 2")

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        ACTIVATIONS.get(value)
        return value


class SupernetSpec(SearchSpaceKnobs):
    """Shape of the DARTS supernet. Frozen; saved with every result."""

    in_channels: int = Field(1, ge=1)
    image_size: int = Field(28, ge=4)
    num_classes: int = Field(10, ge=2)
    stem_multiplier: int = Field(3, ge=1)
    primitives: tuple[str, ...] = PRIMITIVES

    @field_validator("primitives")
    @classmethod
    def _known_primitives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or not value:
            raise ValueError("primitives must be a non-empty tuple without repeats")
        for name in value:
            OPS.get(name)
        return value

    @model_validator(mode="after")
    def _some_real_op(self) -> SupernetSpec:
        if all(p == "none" for p in self.primitives):
            raise ValueError("primitives need at least one operation besides 'none'")
        return self

    def is_reduction(self, cell: int) -> bool:
        return cell in reduction_cells(self.cells)

    def alpha_group(self, cell: int) -> str:
        """Name of the α tensor used by ``cell``."""
        if self.alpha_sharing == "per-cell":
            return f"cell{cell}"
        return "reduce" if self.is_reduction(cell) else "normal"

    def alpha_groups(self) -> tuple[str, ...]:
        """α tensors of this network, in a fixed order (only groups some cell uses)."""
        seen: dict[str, None] = {}
        for cell in range(self.cells):
            seen.setdefault(self.alpha_group(cell), None)
        if self.alpha_sharing == "shared":
            return tuple(g for g in ("normal", "reduce") if g in seen)
        return tuple(seen)

    def alpha_shape(self) -> tuple[int, int]:
        return edges_per_cell(self.nodes), len(self.primitives)

    def alpha_count(self) -> int:
        """Total number of architecture parameters."""
        rows, cols = self.alpha_shape()
        return len(self.alpha_groups()) * rows * cols


def spec_for_paper_p(p: int, base: SupernetSpec | None = None, max_cells: int = 64, min_nodes: int = 8,
                     max_nodes: int = 10) -> SupernetSpec:
    """Per-cell spec whose α count is closest to the paper's P²/2 (ties: fewest cells). The scale grows by depth:
    cells keep 8–10 nodes (without that floor, 32 one-node cells would match P = 32 exactly), and ``max_cells`` is
    the run config's bound on cells."""
    if p < 2:
        raise ValueError(f"paper network size P must be >= 2, got {p}")
    base = base or SupernetSpec()
    target = p * p / 2
    best: tuple[float, int, int] | None = None
    for cells in range(1, max_cells + 1):
        for nodes in range(min_nodes, max_nodes + 1):
            count = cells * edges_per_cell(nodes) * len(base.primitives)
            key = (abs(count - target), cells, nodes)
            if best is None or key < best:
                best = key
    assert best is not None
    return base.model_copy(update={"cells": best[1], "nodes": best[2], "alpha_sharing": "per-cell"})


@dataclass(frozen=True)
class CellGenotype:
    """Discrete cell: for node i, two (operation, input index) pairs; inputs 0/1 are the cell inputs."""

    edges: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]

    def to_dict(self) -> dict[str, list[Any]]:
        return {"edges": [list(e) for e in self.edges], "concat": list(self.concat)}


@dataclass(frozen=True)
class Genotype:
    """Discrete architecture: one :class:`CellGenotype` per α group (``normal``/``reduce`` or ``cellN``)."""

    groups: tuple[tuple[str, CellGenotype], ...]

    def cell(self, group: str) -> CellGenotype:
        for name, cell in self.groups:
            if name == group:
                return cell
        raise ValueError(f"unknown α group {group!r}; known: {', '.join(n for n, _ in self.groups)}")

    def to_dict(self) -> dict[str, dict[str, list[Any]]]:
        return {name: cell.to_dict() for name, cell in self.groups}

    def __str__(self) -> str:
        parts = []
        for name, cell in self.groups:
            ops = " ".join(f"{op}<-{src}" for op, src in cell.edges)
            parts.append(f"{name}: {ops}")
        return " | ".join(parts)
