"""``archleak reproduce``: one paper table, cell by cell, with resume, a wall-time budget and the outputs.

Layout under ``OUT/<table>/``: ``plan.json`` (which cells run on this scale, and why the others do not),
``cells/<cell>.json`` (one finished cell, written atomically: a stopped run loses at most the cell in progress),
then ``<table>.csv``, ``<table>.md``, ``<table>.json`` and ``<table>.png`` from the finished cells. A cell whose
estimated cost does not fit the scale's budget is not run and says so with its estimate; the cheapest cells run
first, so a budget buys as many cells as it can.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fednas.storage import atomic_write_bytes, atomic_write_json, csv_bytes, package_versions
from simulations.reproduce.executors import EXECUTORS, Context
from simulations.reproduce.report import plot_table, table_markdown
from simulations.reproduce.scenario import Cell, Scenario, ScenarioError, cell_slug, load_scenario

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]


@dataclass
class TableRun:
    table: str
    folder: Path
    computed: list[str]
    reused: list[str]
    rows: list[dict[str, Any]]


def stamp(scenario: Scenario, scale: str, seed: int) -> str:
    """What makes a finished cell reusable: the scenario as parsed, the scale and the seed."""
    text = json.dumps([scenario.model_dump(mode="json"), scale, seed], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"command": " ".join(["archleak", *sys.argv[1:]]) if sys.argv else "", "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "versions": package_versions()}


def settings_for(scenario: Scenario, scale: str) -> Any:
    model = EXECUTORS.get(scenario.kind).settings
    try:
        return model.model_validate(scenario.scales[scale].settings)   # type: ignore[index]
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{scenario.table}: scales.{scale}.settings{'.' + where if where else ''}: "
                            f"{first['msg']}") from None


def make_plan(scenario: Scenario, scale: str, settings: Any, ctx: Context, log: Log) -> dict[str, Any]:
    """Which cells run: those the executor can run here, cheapest first, while the estimates fit the budget."""
    executor, budget = EXECUTORS.get(scenario.kind), scenario.scales[scale].budget_s   # type: ignore[index]
    entries, estimates, bounds = {}, {}, {}
    for cell in scenario.cells(scale):
        reason = executor.skip(cell, settings, ctx)
        if reason is None and scenario.scales[scale].probe:   # type: ignore[index]
            probe = executor.probe(cell, settings, ctx)
            estimates[cell.id], bounds[cell.id] = float(probe["estimated_s"]), probe["bound"]
            log(f"archleak: {scenario.table} {cell.id}: estimated {estimates[cell.id]:.0f} s ({probe['bound']})")
        entries[cell.id] = {"run": reason is None, "reason": reason, "estimated_s": estimates.get(cell.id),
                            "bound": bounds.get(cell.id)}
    spent = 0.0
    for cell_id, estimate in sorted(estimates.items(), key=lambda kv: kv[1]):
        if spent + estimate > budget:
            at_least = "at least " if bounds[cell_id] == "lower" else ""
            entries[cell_id].update(run=False, reason=(f"not run on this scale: estimated {at_least}"
                                                       f"{estimate:.0f} s, beyond the {budget - spent:.0f} s left of "
                                                       f"the {budget:.0f} s budget after cheaper cells"))
        else:
            spent += estimate
    return {"budget_s": budget, "estimated_s": spent, "cells": entries}


def reproduce_table(table: str, scale: str, seed: int, out: Path, *, resume: bool = False, data_root: str = "",
                    progress: Progress = lambda *a: None, log: Log = print) -> TableRun:
    scenario = load_scenario(table)
    if scale not in scenario.scales:
        raise ScenarioError(f"unknown scale {scale!r}; known: {', '.join(scenario.scales)}")
    settings = settings_for(scenario, scale)
    folder = Path(out) / table
    key = stamp(scenario, scale, seed)
    ctx = Context(data_root=data_root, seed=seed, folder=folder, scale=scale, log=log,
                  budget_s=scenario.scales[scale].budget_s)
    plan_path = folder / "plan.json"
    previous = json.loads(plan_path.read_text()) if resume and plan_path.exists() else None
    plan = previous if previous and previous.get("stamp") == key else {
        "stamp": key, **make_plan(scenario, scale, settings, ctx, log)}
    atomic_write_json(plan_path, plan)
    computed, reused, records = [], [], []
    cells = scenario.cells(scale)
    for done, cell in enumerate(cells):
        progress(f"{table} cells", done, len(cells))
        path = folder / "cells" / f"{cell_slug(cell.id)}.json"
        record = _finished(path, key) if resume else None
        if record is not None:
            reused.append(cell.id)
        else:
            record = _run_cell(scenario, cell, settings, ctx, plan["cells"][cell.id], key, progress, log)
            atomic_write_json(path, record)
            computed.append(cell.id)
        records.append(record)
    progress(f"{table} cells", len(cells), len(cells))
    rows = [row for r in records for row in r["rows"]]
    write_outputs(scenario, scale, seed, settings, plan, records, rows, folder)
    return TableRun(table, folder, computed, reused, rows)


def _finished(path: Path, key: str) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("stamp") == key else None


def _run_cell(scenario: Scenario, cell: Cell, settings: Any, ctx: Context, entry: dict[str, Any], key: str,
              progress: Progress, log: Log) -> dict[str, Any]:
    executor = EXECUTORS.get(scenario.kind)
    tick = time.perf_counter()
    if not entry["run"]:
        log(f"archleak: {scenario.table} {cell.id}: {entry['reason']}")
        rows = [{"cell": cell.id, "status": "not run", "note": entry["reason"]}]
        return {"stamp": key, "cell": cell.model_dump(), "rows": rows, "details": [], "seconds": 0.0}
    log(f"archleak: {scenario.table} {cell.id}: running")
    result = executor.run_cell(cell, settings, ctx, progress)
    seconds = time.perf_counter() - tick
    log(f"archleak: {scenario.table} {cell.id}: done in {seconds:.0f} s")
    return {"stamp": key, "cell": cell.model_dump(), "rows": result["rows"], "details": result.get("details", []),
            "seconds": seconds, "estimated_s": entry.get("estimated_s")}


def write_outputs(scenario: Scenario, scale: str, seed: int, settings: Any, plan: dict[str, Any],
                  records: list[dict[str, Any]], rows: list[dict[str, Any]], folder: Path) -> None:
    executor = EXECUTORS.get(scenario.kind)
    name = scenario.table
    atomic_write_bytes(folder / f"{name}.csv", csv_bytes(rows, executor.columns))
    meta = {"table": name, "title": scenario.title, "scale": scale, "seed": seed, **provenance(),
            "settings": settings.model_dump(by_alias=True), "scenario": scenario.model_dump(mode="json", by_alias=True),
            "plan": plan, "seconds_per_cell": {r["cell"]["id"]: r["seconds"] for r in records},
            "seconds": sum(r["seconds"] for r in records), "rows": rows,
            "details": {r["cell"]["id"]: r["details"] for r in records}}
    atomic_write_json(folder / f"{name}.json", meta)
    atomic_write_bytes(folder / f"{name}.md", table_markdown(scenario, executor.headline, executor.extra,
                                                             meta).encode())
    plot_table(scenario, executor.headline, rows, folder / f"{name}.png")
