"""A reproduction scenario: one paper table as data (``scenarios/<table>.toml``), validated on load.

A scenario names its executor (``kind``: ``adra``, ``amia`` or ``defense``), its cells (the product of its
``axes``, each cell a set of knob values), the knobs every cell shares (``fixed``), the paper's numbers per cell
(``paper``, keyed by cell id) and, per scale (``ci``, ``cpu``, ``paper``), the executor's settings and the subset
of axis values that scale runs. A cell id reads ``name=value`` per axis, joined by spaces (``activation=elu p=32``).
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fednas.search_space import spec_for_paper_p

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCALES = ("ci", "cpu", "paper")
# ``reproduce all``: the whole run's wall-time budget per scale (the 6 hours on 2 cores at ``cpu``); each
# table gets its own budget or what is left of this one, whichever is smaller
ALL_BUDGET_S = {"ci": 6 * 180.0, "cpu": 6 * 3600.0, "paper": float("inf")}
KINDS = ("adra", "amia", "defense")
Scalar = str | int | float | bool


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Scale(Strict):
    """What one scale runs: a subset of each axis (empty: all values) and the executor's settings."""

    axes: dict[str, list[Scalar]] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    budget_s: float = Field(alias="budget-s", gt=0, description="the table's wall-time budget on this scale")
    probe: bool = Field(True, description="measure each cell's cost before the run and keep within the budget")


class Cell(Strict):
    id: str
    knobs: dict[str, Scalar]
    paper: dict[str, float | None] = Field(default_factory=dict)


class Scenario(Strict):
    table: str = Field(pattern=r"^table[1-6]$")
    title: str
    kind: Literal["adra", "amia", "defense"]
    paper_metric: str = Field(alias="paper-metric", description="what the paper's numbers are, and its caveats")
    axes: dict[str, list[Scalar]]
    fixed: dict[str, Scalar] = Field(default_factory=dict)
    paper: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    scales: dict[Literal["ci", "cpu", "paper"], Scale]

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        if not axes:
            raise ValueError("at least one axis is needed")
        for name, values in axes.items():
            if not values or len(set(map(repr, values))) != len(values):
                raise ValueError(f"axis {name!r} needs distinct values, got {values}")
        return axes

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        ids = {cell_id(k) for k in self._products(self.axes)}
        for key in self.paper:
            if key not in ids:
                raise ValueError(f"paper numbers for {key!r}, which is not a cell; cells: {', '.join(sorted(ids))}")
        missing = [s for s in SCALES if s not in self.scales]
        if missing:
            raise ValueError(f"scales {missing} missing; every scenario defines {', '.join(SCALES)}")
        for name, scale in self.scales.items():
            for axis, values in scale.axes.items():
                if axis not in self.axes:
                    raise ValueError(f"scale {name}: unknown axis {axis!r}; axes: {', '.join(self.axes)}")
                extra = [v for v in values if v not in self.axes[axis]]
                if extra:
                    raise ValueError(f"scale {name}: axis {axis!r} values {extra} are not among {self.axes[axis]}")
        overlap = set(self.fixed) & set(self.axes)
        if overlap:
            raise ValueError(f"knobs {sorted(overlap)} are both fixed and an axis")
        return self

    @staticmethod
    def _products(axes: Mapping[str, list[Scalar]]) -> list[dict[str, Scalar]]:
        names = list(axes)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(axes[n] for n in names))]

    def cells(self, scale: str) -> list[Cell]:
        """Every cell this scale runs, in the axes' order, with its paper numbers."""
        chosen = {a: self.scales[scale].axes.get(a) or v for a, v in self.axes.items()}   # type: ignore[index]
        return [Cell(id=cell_id(k), knobs={**self.fixed, **k}, paper=self.paper.get(cell_id(k), {}))
                for k in self._products(chosen)]


def p_knobs(p: int) -> dict[str, Any]:
    """Run-config knobs of the supernet for the paper's network size P (α count within 5% of P²/2)."""
    spec = spec_for_paper_p(int(p))
    return {"cells": spec.cells, "nodes": spec.nodes, "alpha-sharing": "per-cell"}


def beyond_scale(p: int, max_p: int) -> str | None:
    """Why a P above the scale's largest does not run, with the size it would have been."""
    if p <= max_p:
        return None
    spec = spec_for_paper_p(p)
    return (f"not run on this scale: P={p} is {spec.cells} cells x {spec.nodes} nodes ({spec.alpha_count():,} α "
            f"entries); this scale stops at P={max_p}")


def cell_id(knobs: Mapping[str, Scalar]) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in knobs.items())


def cell_slug(cell: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "=.-") else "_" for c in cell)


def _text(value: Scalar) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


class ScenarioError(ValueError):
    """A scenario file that does not parse or validate (the message is one line)."""


def known_tables(folder: Path = SCENARIO_DIR) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in folder.glob("table*.toml")))


def load_scenario(table: str, folder: Path = SCENARIO_DIR) -> Scenario:
    """The scenario of ``table`` (``table1`` … ``table6``); a one-line :class:`ScenarioError` otherwise."""
    path = folder / f"{table}.toml"
    if not path.is_file():
        raise ScenarioError(f"unknown table {table!r}; known: {', '.join(known_tables(folder)) or 'none'}, all")
    return parse_scenario(path)


def parse_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "scenario"
        raise ScenarioError(f"{path}: {where}: {err['msg']}") from None
    if scenario.table != path.stem:
        raise ScenarioError(f"{path}: table = {scenario.table!r} but the file is named {path.stem}.toml")
    return scenario
