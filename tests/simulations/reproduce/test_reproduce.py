"""``archleak reproduce`` end to end at the ``ci`` scale: identical CSVs from the same seed, the paper's numbers
in them, resume without recomputing, the budget planner, and the verdicts REPORT.md is made of."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fednas.data import DATASETS
from simulations.cli import app
from simulations.reproduce.executors import EXECUTORS, Headline
from simulations.reproduce.report import report_markdown, verdict
from simulations.reproduce.runner import reproduce_table, stamp
from simulations.reproduce.scenario import load_scenario
from tests.conftest import flat

runner = CliRunner()


@pytest.fixture()
def mnist(data_root: Path) -> str:
    if not DATASETS.get("mnist").present(data_root):
        pytest.skip(f"MNIST is not under {data_root}: the reproduction scenarios are MNIST's")
    return str(data_root)


def test_adra_table_twice_gives_identical_csvs_and_resumes(mnist: str, tmp_path: Path) -> None:
    first = runner.invoke(app, ["reproduce", "table2", "--scale", "ci", "--out", str(tmp_path / "a"),
                                "--data-root", mnist, "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "2 cell(s) computed, 0 reused" in first.output
    again = reproduce_table("table2", "ci", 0, tmp_path / "b", data_root=mnist, log=lambda line: None)
    csv = (tmp_path / "a" / "table2" / "table2.csv").read_bytes()
    assert csv == (tmp_path / "b" / "table2" / "table2.csv").read_bytes()
    rows = [r for r in again.rows if r["variant"] == "paper"]
    assert [r["paper_sr"] for r in rows] == [0.314, 0.212]          # the paper's B = 1 and B = 2 at P = 32
    assert all(r["n"] == 2 and 0 <= r["recognised_lo"] <= r["recognised"] <= r["recognised_hi"] <= 1 for r in rows)
    assert all(r["baseline_recognised"] is not None for r in again.rows)   # the label-only control beside it
    resumed = reproduce_table("table2", "ci", 0, tmp_path / "a", resume=True, data_root=mnist,
                              log=lambda line: None)
    assert (resumed.computed, len(resumed.reused)) == ([], 2)
    assert (tmp_path / "a" / "table2" / "table2.csv").read_bytes() == csv
    scenario = load_scenario("table2")
    assert stamp(scenario, "ci", 1) != stamp(scenario, "ci", 0) != stamp(scenario, "cpu", 0)   # never reused
    meta = json.loads((tmp_path / "b" / "table2" / "table2.json").read_text())
    assert meta["seed"] == 0 and meta["versions"]["torch"] and set(meta["seconds_per_cell"]) == {
        "batch-size=1 p=32", "batch-size=2 p=32"}
    md = (tmp_path / "b" / "table2" / "table2.md").read_text()
    assert "0.314" in md and "label-only" in md and (tmp_path / "b" / "table2" / "table2.png").stat().st_size


def test_amia_table_twice_gives_identical_csvs(mnist: str, tmp_path: Path) -> None:
    first = reproduce_table("table3", "ci", 0, tmp_path / "a", data_root=mnist, log=lambda line: None)
    second = reproduce_table("table3", "ci", 0, tmp_path / "b", data_root=mnist, log=lambda line: None)
    csv = (tmp_path / "a" / "table3" / "table3.csv").read_bytes()
    assert csv == (tmp_path / "b" / "table3" / "table3.csv").read_bytes()
    (row,) = first.rows
    assert row["status"] == "done" and row["paper_accuracy"] == 0.56 and row["n_members"] > 0   # MNIST, P = 32
    assert row["auc_lo"] <= row["auc"] <= row["auc_hi"] and row["target_test_accuracy"] is not None
    assert "0.56" in (tmp_path / "a" / "table3" / "table3.md").read_text()
    assert second.computed == first.computed


def test_amia_per_search_method_trains_each_its_own_target(mnist: str, tmp_path: Path) -> None:
    (darts, enas) = reproduce_table("table4", "ci", 0, tmp_path, data_root=mnist, log=lambda line: None).rows
    # the ci scale runs P = 32, where the paper has no number (its Table 4 is P = 64): none is printed
    assert darts["status"] == "done" and darts["paper_accuracy"] is None and darts["n_members"] > 0
    assert enas["status"] == "done" and enas["paper_accuracy"] is None and enas["n_members"] > 0
    assert enas["target_test_accuracy"] != darts["target_test_accuracy"]


def test_a_target_key_names_the_method_and_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached target is reused only by the same method at the same implementation version."""
    from fednas import methods
    from simulations.reproduce.amia import AmiaSettings, target_key
    from simulations.reproduce.scenario import Cell

    settings = AmiaSettings.model_validate(load_scenario("table4").scales["ci"].settings)
    cell = {m: Cell(id=m, knobs={"dataset": "mnist", "p": 32, "search-method": m}) for m in ("darts", "enas")}
    darts, enas = (target_key(cell[m], settings, 0, "") for m in ("darts", "enas"))
    assert darts != enas
    monkeypatch.setitem(methods.SEARCH_METHODS._items, "enas",
                        dataclasses.replace(methods.SEARCH_METHODS.get("enas"), version=99))
    assert target_key(cell["enas"], settings, 0, "") != enas
    assert target_key(cell["darts"], settings, 0, "") == darts


def test_a_darts_target_is_shared_by_tables_that_differ_only_in_another_methods_knobs() -> None:
    """Tables 3 and 4 train the same DARTS target (table 4 sets PDARTS's depth step, which DARTS never reads);
    PDARTS's own target still keys on it; every method knob is read by some method."""
    from fednas.methods import SEARCH_METHODS, MethodKnobs
    from simulations.reproduce.amia import AmiaSettings, target_key
    from simulations.reproduce.scenario import Cell

    def key(table: str, method: str, p: int = 64, **run: object) -> str:
        settings = AmiaSettings.model_validate(load_scenario(table).scales["cpu"].settings)
        settings = settings.model_copy(update={"run": {**settings.run, **run}})
        return target_key(Cell(id="x", knobs={"dataset": "mnist", "p": p, "search-method": method}), settings, 0, "")

    assert key("table3", "darts") == key("table4", "darts") and key("table3", "darts", 32) == key("table4", "darts", 32)
    assert key("table4", "darts", **{"pdarts-keep": "4,2"}) == key("table4", "darts")
    assert key("table4", "pdarts", **{"pdarts-keep": "4,2"}) != key("table4", "pdarts")
    read = {k for m in SEARCH_METHODS for k in SEARCH_METHODS.get(m).knobs}
    assert read == set(MethodKnobs.model_fields) - {"search_method"}


def test_a_search_method_the_project_lacks_is_not_implemented_never_a_number() -> None:
    from simulations.reproduce.amia import AmiaSettings, skip
    from simulations.reproduce.scenario import Cell

    settings = AmiaSettings.model_validate(load_scenario("table4").scales["ci"].settings)
    why = skip(Cell(id="x", knobs={"dataset": "mnist", "search-method": "nsga-net"}), settings, "")
    assert why is not None and why.startswith("not implemented") and "darts, pdarts, enas, smash" in why


def test_a_cell_others_read_runs_first_whatever_its_cost() -> None:
    from simulations.reproduce.runner import _run_order

    entries = {"md": {"estimated_s": 5.0, "rank": 1}, "none": {"estimated_s": 9.0, "rank": 0},
               "tls": {"estimated_s": 7.0, "rank": 1}, "old": {"estimated_s": 1.0}}   # no rank: 0
    assert sorted(entries, key=lambda c: _run_order(entries[c])) == ["old", "none", "md", "tls"]


def test_a_cell_whose_probe_the_attack_refused_runs_after_those_that_give_numbers() -> None:
    from simulations.reproduce.runner import _run_order

    entries = {"b8 p256": {"estimated_s": 1521.0, "not_applicable": {"paper": "update not finite"}},
               "b8 p32": {"estimated_s": 1706.0}, "b2 p32": {"estimated_s": 698.0}}
    assert sorted(entries, key=lambda c: _run_order(entries[c])) == ["b2 p32", "b8 p32", "b8 p256"]


def test_the_planner_runs_the_cheapest_cells_within_the_budget(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Cheapest first; each estimate is corrected by how the finished cells' measured time compared with theirs."""
    costs = {"batch-size=1 p=32": 0.04, "batch-size=2 p=32": 0.03}

    def run_cell(cell, settings, ctx, progress):
        time.sleep(0.06)   # twice its estimate: the next cell's estimate doubles too
        return {"rows": [{"cell": cell.id, "variant": "paper", "status": "done"}]}

    fake = dataclasses.replace(
        EXECUTORS.get("adra"), probe=lambda cell, s, ctx: {"estimated_s": costs[cell.id], "bound": "measured"},
        run_cell=run_cell)
    monkeypatch.setitem(EXECUTORS._items, "adra", fake)
    monkeypatch.setattr("simulations.reproduce.runner.probe_apart",   # in this process, where the fake lives
                        lambda kind, cell, settings, ctx: EXECUTORS.get(kind).probe(cell, settings, ctx))
    scenario = load_scenario("table2")
    scales = dict(scenario.scales)
    scales["ci"] = scales["ci"].model_copy(update={"probe": True, "budget_s": 0.1})
    monkeypatch.setattr("simulations.reproduce.runner.load_scenario",
                        lambda table: scenario.model_copy(update={"scales": scales}))
    result = reproduce_table("table2", "ci", 0, tmp_path, log=lambda line: None)
    status = {r["cell"]: r for r in result.rows}
    assert status["batch-size=2 p=32"]["status"] == "done"
    assert status["batch-size=1 p=32"]["status"] == "not run"
    assert "measured over estimated so far" in status["batch-size=1 p=32"]["note"]
    assert [r["cell"] for r in result.rows] == ["batch-size=1 p=32", "batch-size=2 p=32"]   # the axes' order
    assert json.loads((tmp_path / "table2" / "plan.json").read_text())["ran"] == ["batch-size=2 p=32"]
    again = reproduce_table("table2", "ci", 0, tmp_path, resume=True, log=lambda line: None)
    assert again.reused == ["batch-size=2 p=32"] and again.computed == ["batch-size=1 p=32"]   # decided again
    (tmp_path / "table2" / "cells" / "batch-size=2_p=32.json").unlink()
    partial = reproduce_table("table2", "ci", 0, tmp_path, report_only=True, resume=True, log=lambda line: None)
    assert partial.computed == [] and "continue with --resume" in partial.rows[1]["note"]
    wider = reproduce_table("table2", "ci", 0, tmp_path / "wide", log=lambda line: None, budget_s=10.0)
    assert [r["status"] for r in wider.rows] == ["done", "done"]   # a budget given instead of the scale's
    assert json.loads((tmp_path / "wide" / "table2" / "plan.json").read_text())["budget_s"] == 10.0
    again = reproduce_table("table2", "ci", 0, tmp_path / "wide", report_only=True, resume=True, log=lambda line: None)
    assert [r["status"] for r in again.rows] == ["done", "done"] and again.meta["plan"]["budget_s"] == 10.0


def test_a_budget_does_not_pay_to_probe_cells_larger_than_one_that_did_not_fit(monkeypatch: pytest.MonkeyPatch,
                                                                                 tmp_path: Path) -> None:
    """Tier by tier of P: the probes' seconds count against the budget, and once a cell of a tier does not fit,
    the larger tiers are written as not run without a probe."""
    costs = {"batch-size=1 p=32": 0.01, "batch-size=2 p=32": 0.02, "batch-size=1 p=64": 5.0,
             "batch-size=2 p=64": 0.01, "batch-size=1 p=96": 0.01, "batch-size=2 p=96": 0.01}
    probed: list[str] = []

    def probe(cell, settings, ctx):
        probed.append(cell.id)
        time.sleep(0.05)
        return {"estimated_s": costs[cell.id], "bound": "measured"}

    def run_cell(cell, settings, ctx, progress):
        time.sleep(costs[cell.id])   # as estimated
        return {"rows": [{"cell": cell.id, "variant": "paper", "status": "done"}]}

    fake = dataclasses.replace(EXECUTORS.get("adra"), probe=probe, run_cell=run_cell)
    monkeypatch.setitem(EXECUTORS._items, "adra", fake)
    monkeypatch.setattr("simulations.reproduce.runner.probe_apart",
                        lambda kind, cell, settings, ctx: EXECUTORS.get(kind).probe(cell, settings, ctx))
    scenario = load_scenario("table2")
    scales = dict(scenario.scales)
    scales["ci"] = scales["ci"].model_copy(update={"probe": True, "budget_s": 1.0,
                                                   "axes": {"batch-size": [1, 2], "p": [32, 64, 96]},
                                                   "settings": {**scales["ci"].settings, "max-p": 96}})
    monkeypatch.setattr("simulations.reproduce.runner.load_scenario",
                        lambda table: scenario.model_copy(update={"scales": scales}))
    result = reproduce_table("table2", "ci", 0, tmp_path, log=lambda line: None)
    status = {r["cell"]: r for r in result.rows}
    assert probed == ["batch-size=1 p=32", "batch-size=2 p=32", "batch-size=1 p=64", "batch-size=2 p=64"]
    assert [status[c]["status"] for c in costs] == ["done", "done", "not run", "done", "not run", "not run"]
    assert "the probes took" in status["batch-size=1 p=64"]["note"]
    assert "larger than batch-size=1 p=64, which did not fit" in status["batch-size=1 p=96"]["note"]
    plan = json.loads((tmp_path / "table2" / "plan.json").read_text())
    assert all(plan["cells"][c]["probe_s"] >= 0.0 for c in probed) and "batch-size=1 p=96" not in plan["cells"]


def test_reproduce_all_gives_each_table_at_most_what_is_left_of_the_whole_runs_budget(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cpu: 6 hours for all six tables; a table whose own budget exceeds what is left gets what is left."""
    from simulations.reproduce import runner as runner_module
    from simulations.reproduce.runner import TableRun

    given: list[float | None] = []

    def fake(table, scale, seed, out, **kw):
        given.append(kw["budget_s"])
        return TableRun(table, tmp_path / table, [], [], [], {"seconds": 5600.0, "probe_seconds": 400.0,
                                                               "rows": [], "scale": scale})

    monkeypatch.setattr(runner_module, "reproduce_table", fake)
    monkeypatch.setattr("simulations.reproduce.report.report_markdown", lambda sections: "report")
    result = runner.invoke(app, ["reproduce", "all", "--scale", "cpu", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    # budgets 4800, 4800, 5400 x 4 against 21,600 s, each table spending 6,000 s: the fourth gets what is left
    assert given == [None, None, None, pytest.approx(21600 - 3 * 6000), 1.0, 1.0]


def test_unknown_tables_and_scales_are_one_line_usage_errors(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["reproduce", "table9", "--scale", "ci", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown table 'table9'; known: table1" in flat(bad.output)
    scale = runner.invoke(app, ["reproduce", "table1", "--scale", "huge", "--out", str(tmp_path)])
    assert scale.exit_code == 2 and "--scale must be one of ci, cpu, paper" in flat(scale.output)


def test_verdicts_compare_the_paper_with_our_interval() -> None:
    head = Headline("accuracy", "lo", "hi", "paper", "acc", "attack")
    row = {"status": "done", "accuracy": 0.6, "lo": 0.55, "hi": 0.65}
    assert verdict(row | {"paper": 0.56}, head, "adra").startswith("reproduces")
    assert verdict(row | {"paper": 0.50}, head, "adra") == "ours above the paper"
    assert verdict(row | {"paper": 0.70}, head, "adra") == "ours below the paper"
    assert verdict(row | {"paper": 0.70, "lo": 0.3, "hi": 0.9}, head, "adra").startswith("inconclusive")
    assert "chance also within" in verdict({"status": "done", "accuracy": 0.52, "lo": 0.48, "hi": 0.56,
                                            "paper": 0.56}, head, "amia")
    assert verdict({"status": "not run"}, head, "adra") == "not run"
    assert verdict(row, head, "adra") == "no paper number"
    defended = {"status": "done", "amia_accuracy": 0.5, "amia_accuracy_lo": 0.47, "amia_accuracy_hi": 0.53,
                "d_amia_accuracy": -0.1, "paper_d_accuracy": -0.31, "recognised": 0.1, "recognised_lo": 0.05,
                "recognised_hi": 0.18, "d_recognised": -0.2, "paper_d_sr": -0.182}
    assert verdict(defended, head, "defense") == ("AMIA: ours above the paper; ADRA: reproduces (paper within our "
                                                  "95% CI)")


def test_a_probe_runs_in_a_child_process_and_answers(mnist: str) -> None:
    """The defense probe (a timed federation, ADRA per captured image, AMIA's shadows) from a child process."""
    from simulations.reproduce.executors import Context
    from simulations.reproduce.runner import probe_apart, settings_for

    scenario = load_scenario("table6")
    none = scenario.cells("ci")[0]
    ctx = Context(data_root=mnist, seed=0, folder=Path("."), scale="ci", log=lambda line: None)
    answer = probe_apart("defense", none, settings_for(scenario, "ci"), ctx)
    assert answer["bound"] == "rough" and answer["estimated_s"] > 0 and answer["rank"] == 0


def test_defense_cells_rank_the_undefended_first_then_the_papers_then_ours() -> None:
    """The undefended cell ranks first, since the others' deltas and MD read it, then the paper's defenses; the
    project's own (TLS among them) last."""
    from simulations.reproduce.defense import rank

    cells = load_scenario("table6").cells("cpu")
    ranks = {str(c.knobs["defense"]): rank(c) for c in cells}
    assert ranks["none"] == 0 and ranks["tls"] == 2
    assert all(rank(c) == (1 if c.paper else 2) for c in cells if c.knobs["defense"] != "none")
    assert {r for name, r in ranks.items() if name != "none"} == {1, 2}   # both kinds are in the table


def test_a_target_that_lost_a_client_is_not_cached(tmp_path: Path) -> None:
    from simulations.reproduce.amia import require_every_client

    (tmp_path / "rounds.jsonl").write_text('{"round": 1, "clients": 4}\n{"round": 2, "clients": 1}\n')
    with pytest.raises(RuntimeError, match=r"fewer than 4 clients in round\(s\) \[2\]; not cached"):
        require_every_client(tmp_path, 4)


def test_report_sections_come_from_the_rows() -> None:
    scenario = load_scenario("table3")
    head = EXECUTORS.get("amia").headline
    rows = [{"cell": "dataset=mnist p=32", "attack": "ml-leaks", "status": "done", "accuracy": 0.7,
             "accuracy_lo": 0.67, "accuracy_hi": 0.73, "paper_accuracy": 0.56, "gap": 0.12, "n_members": 600,
             "n_nonmembers": 400},
            {"cell": "dataset=mnist p=32", "attack": "rmia", "status": "done", "accuracy": 0.49,
             "accuracy_lo": 0.46, "accuracy_hi": 0.52, "paper_accuracy": None},
            {"cell": "dataset=cifar100 p=32", "status": "not run", "note": "not run: dataset cifar100 not present"},
            {"cell": "dataset=cifar100 p=64", "status": "not run", "note": "not run: dataset cifar100 not present"}]
    text = report_markdown([(scenario, head, {"rows": rows, "scale": "cpu", "seconds": 10.0})])
    assert "ours 0.700 [0.670, 0.730] (n = 1,000), paper 0.560: ours above the paper" in text
    assert "(rmia): ours 0.490 [0.460, 0.520]; no paper number at this cell; chance (0.5) within the interval" in text
    assert "train–test gap" in text and (
        "Not measured (dataset=cifar100 p=32, dataset=cifar100 p=64): not run: dataset cifar100 not present" in text)


def test_report_lines_of_table6_give_each_attack_its_own_change_n_and_paper_number() -> None:
    scenario = load_scenario("table6")
    head = EXECUTORS.get("defense").headline
    row = {"cell": "defense=dp-sgd-alpha-paper", "defense": "dp-sgd-alpha-paper", "status": "done",
           "amia_accuracy": 0.498, "amia_accuracy_lo": 0.476, "amia_accuracy_hi": 0.52, "d_amia_accuracy": 0.003,
           "paper_d_accuracy": None, "amia_n": 2000, "recognised": 0.24, "recognised_lo": 0.168,
           "recognised_hi": 0.331, "d_recognised": 0.01, "paper_d_sr": -0.182, "adra_n": 104}
    text = report_markdown([(scenario, head, {"rows": [row], "scale": "cpu", "seconds": 10.0})])
    assert ("- defense=dp-sgd-alpha-paper (dp-sgd-alpha-paper): ADRA: ours Δ 0.010 [-0.062, 0.101] (n = 104), "
            "paper Δ -0.182: ours above the paper.") in text
    assert "paper –" not in text


def test_defense_rows_take_deltas_against_none_and_say_what_tls_left(tmp_path: Path) -> None:
    from simulations.reproduce.defense import defense_row
    from simulations.reproduce.scenario import Cell

    run = tmp_path / "run"
    (run / "reconstructions" / "wire").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"threat-model": "wire"}}))
    rates = {"recognised": {"k": 30, "n": 100, "low": 0.22, "high": 0.40},
             "identified": {"k": 10, "n": 100, "low": 0.05, "high": 0.17},
             "label": {"k": 90, "n": 100, "low": 0.83, "high": 0.94}}
    (run / "reconstructions" / "wire" / "summary.json").write_text(json.dumps({"by_attack": {"adra": {
        "intervals": {"attack": rates}, "attack": {"psnr": 14.0, "ssim": 0.4}, "baseline": {"recognised": 0.1}}}}))
    metrics = {"n_members": 500, "n_nonmembers": 500, "accuracy": 0.6, "f1": 0.62, "auc": 0.63, "auc_low": 0.6,
               "auc_high": 0.66}
    amia = {"alpha": metrics, "theta": metrics | {"auc": 0.7}, "audit": {"epsilon_lower": 0.4}}
    none = defense_row(Cell(id="defense=none", knobs={"defense": "none"}), {"run_dir": str(run),
                                                                            "test_accuracy": 0.9}, amia, None)
    assert none["recognised"] == 0.3 and none["adra_n"] == 100 and none["d_recognised"] is None
    assert none["amia_accuracy_lo"] < 0.6 < none["amia_accuracy_hi"] and none["audit_epsilon_lower"] == 0.4
    paper = {"d_accuracy": -0.31}
    noisy = defense_row(Cell(id="defense=input-noise", knobs={"defense": "input-noise"}, paper=paper),
                        {"run_dir": str(run), "test_accuracy": 0.85}, amia | {"alpha": metrics | {"accuracy": 0.55}},
                        none)
    assert noisy["d_amia_accuracy"] == pytest.approx(-0.05) and noisy["d_test_accuracy"] == pytest.approx(-0.05)
    assert noisy["paper_d_accuracy"] == -0.31
    tls = defense_row(Cell(id="defense=tls", knobs={"defense": "tls"}),
                      {"run_dir": str(run), "test_accuracy": 0.9,
                       "proxy": {"captures": 0, "inspectable": False, "tls_connections": 12}}, amia, none)
    assert tls["adra_n"] == 0 and tls["recognised"] is None and "stored 0 captures" in tls["note"]
    with pytest.raises(RuntimeError, match="not using TLS"):
        defense_row(Cell(id="defense=tls", knobs={"defense": "tls"}),
                    {"run_dir": str(run), "proxy": {"captures": 3, "inspectable": True, "tls_connections": 0}},
                    amia, none)
