"""Scenario files: every table parses and validates on every scale; a broken one fails in one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.reproduce.runner import settings_for
from simulations.reproduce.scenario import (
    SCALES,
    SCENARIO_DIR,
    ScenarioError,
    cell_id,
    known_tables,
    load_scenario,
    parse_scenario,
)

GOOD = """
table = "table2"
title = "t"
kind = "adra"
paper-metric = "SR"
[axes]
batch-size = [1, 2]
p = [32, 64]
[fixed]
activation = "elu"
[scales.ci]
budget-s = 10
axes = { p = [32] }
settings = { images = 2, variants = ["paper"] }
[scales.cpu]
budget-s = 10
settings = { images = 2, variants = ["paper"] }
[scales.paper]
budget-s = 10
settings = { images = 2, variants = ["paper"] }
[paper."batch-size=1 p=32"]
sr = 0.314
"""


def test_every_table_parses_on_every_scale() -> None:
    assert known_tables() == tuple(f"table{i}" for i in range(1, 7))
    for table in known_tables():
        scenario = load_scenario(table)
        for scale in SCALES:
            settings_for(scenario, scale)
            cells = scenario.cells(scale)
            assert cells and len({c.id for c in cells}) == len(cells)
        assert scenario.paper, f"{table} carries the paper's numbers"


def test_paper_numbers_reach_their_cells() -> None:
    t1 = {c.id: c for c in load_scenario("table1").cells("paper")}
    assert t1["activation=elu p=32"].paper == {"sr": 0.314, "mse": 2.98}
    assert t1["activation=relu p=256"].paper["sr"] == pytest.approx(0.217)
    t4 = {c.id: c for c in load_scenario("table4").cells("cpu")}
    assert t4["p=64 dataset=mnist search-method=enas"].paper == {"accuracy": 0.51, "f1": 0.64}
    assert t4["p=32 dataset=mnist search-method=enas"].paper == {}   # the paper measured P = 64 only


def test_the_scale_picks_a_subset(tmp_path: Path) -> None:
    scenario = parse_scenario(_write(GOOD, tmp_path))
    assert [c.id for c in scenario.cells("ci")] == ["batch-size=1 p=32", "batch-size=2 p=32"]
    assert len(scenario.cells("cpu")) == 4
    assert scenario.cells("ci")[0].knobs == {"activation": "elu", "batch-size": 1, "p": 32}
    assert cell_id({"eta": 0.5, "p": 64}) == "eta=0.5 p=64"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('kind = "adra"', 'kind = "fgsm"'), "kind"),
    (lambda t: t.replace('[paper."batch-size=1 p=32"]', '[paper."batch-size=3 p=32"]'), "not a cell"),
    (lambda t: t.replace("axes = { p = [32] }", "axes = { p = [48] }"), "not among"),
    (lambda t: t.replace("axes = { p = [32] }", "axes = { q = [32] }"), "unknown axis"),
    (lambda t: t.replace("[scales.paper]\nbudget-s = 10", "[scales.gpu]\nbudget-s = 10"), "scales"),
    (lambda t: t.replace("batch-size = [1, 2]", "batch-size = [1, 1]"), "distinct"),
    (lambda t: t.replace('table = "table2"', 'table = "table3"'), "named"),
    (lambda t: t.replace("budget-s = 10\naxes", "budget-s = -1\naxes"), "greater than 0"),
    (lambda t: t + "\n[oops", "not valid TOML"),
])
def test_a_broken_scenario_fails_in_one_line(edit, message, tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario(_write(edit(GOOD), tmp_path))
    assert "\n" not in str(info.value)


def test_bad_settings_and_unknown_tables_fail_in_one_line(tmp_path: Path) -> None:
    scenario = parse_scenario(_write(GOOD.replace('variants = ["paper"] }\n[scales.cpu]',
                                                  'variants = ["fgsm"] }\n[scales.cpu]'), tmp_path))
    with pytest.raises(ScenarioError, match="unknown ADRA variant 'fgsm'; known: paper") as info:
        settings_for(scenario, "ci")
    assert "\n" not in str(info.value)
    with pytest.raises(ScenarioError, match="unknown table 'table9'; known: table1, .*table6, all"):
        load_scenario("table9")
    assert SCENARIO_DIR.is_dir()


def _write(text: str, folder: Path) -> Path:
    path = folder / "table2.toml"
    path.write_text(text)
    return path
