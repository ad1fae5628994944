"""``archleak reproduce``: one paper table, cell by cell, with resume, a wall-time budget and the outputs.

Layout under ``OUT/<table>/``: ``plan.json`` (each cell's probe, saved as it comes, and which cells ran),
``cells/<cell>.json`` (one finished cell, written atomically: a stopped run loses at most the cell in progress),
then ``<table>.csv``, ``<table>.md``, ``<table>.json`` and ``<table>.png`` from the finished cells. Cells are
probed and run tier by tier of network size P (ADRA, AMIA), and within a tier the cheapest first, so a budget buys
as many cells as it can; the probes' seconds count against it. A cell whose estimate (corrected by what the
finished cells measured against theirs) does not fit what is left is not run and says so with its estimate, and
the larger tiers after it are not probed.
"""

from __future__ import annotations

import dataclasses
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
    meta: dict[str, Any]   # what <table>.json holds


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


def probe_cell(scenario: Scenario, scale: str, settings: Any, ctx: Context, cell: Cell, entries: dict[str, Any],
               plan_path: Path, key: str) -> None:
    """Adds the cell's plan entry to ``entries``: why it cannot run here (or None) and its measured cost estimate,
    with the seconds the probe took (they count against the budget). Saved as it comes, so a restart does not
    probe again; a cell already in ``entries`` is not probed."""
    if cell.id in entries:
        return
    executor = EXECUTORS.get(scenario.kind)
    reason = executor.skip(cell, settings, ctx)
    entry: dict[str, Any] = {"reason": reason, "estimated_s": None, "bound": None}
    if reason is None and scenario.scales[scale].probe:   # type: ignore[index]
        tick = time.perf_counter()
        probe = probe_apart(scenario.kind, cell, settings, ctx)
        entry.update(estimated_s=float(probe["estimated_s"]), bound=probe["bound"], rank=probe.get("rank", 0),
                     probe_s=round(time.perf_counter() - tick, 1))
        if probe.get("not_applicable"):
            entry["not_applicable"] = probe["not_applicable"]
        ctx.log(f"archleak: {scenario.table} {cell.id}: estimated {entry['estimated_s']:.0f} s ({probe['bound']}; "
                f"probed in {entry['probe_s']:.0f} s)")
    entries[cell.id] = entry
    atomic_write_json(plan_path, {"stamp": key, "budget_s": ctx.budget_s, "cells": entries})


def probe_apart(kind: str, cell: Cell, settings: Any, ctx: Context) -> dict[str, Any]:
    """The executor's probe in a child process: probing the largest P builds models of several GiB, and memory a
    process has held is not handed back, so the run (and the federations it starts) would inherit it."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_probe, (kind, cell, settings, dataclasses.replace(ctx, log=print)))


def _probe(kind: str, cell: Cell, settings: Any, ctx: Context) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return EXECUTORS.get(kind).probe(cell, settings, ctx)


def admit(entry: dict[str, Any], finished: list[dict[str, Any]], budget: float, probed_s: float = 0.0
          ) -> str | None:
    """None when the cell fits the budget left (after the finished cells and the probes); else why not. The
    estimate is corrected by the ratio of measured to estimated seconds of the cells finished so far (a loaded
    machine, or a pessimistic probe, shows there)."""
    if entry["reason"] is not None:
        return str(entry["reason"])
    if entry["estimated_s"] is None:
        return None
    spent = sum(r["seconds"] for r in finished) + probed_s
    estimated = sum(r["estimated_s"] for r in finished if r.get("estimated_s"))
    measured = sum(r["seconds"] for r in finished if r.get("estimated_s"))
    ratio = measured / estimated if estimated > 0 else 1.0
    cost = entry["estimated_s"] * ratio
    if cost <= budget - spent:
        return None
    at_least = "at least " if entry["bound"] == "lower" else ""
    scaled = (f" (the probe's {entry['estimated_s']:.0f} s x {ratio:.2f}, measured over estimated so far)"
              if ratio != 1.0 else "")
    probes = f" (the probes took {probed_s:.0f} s of it)" if probed_s else ""
    return (f"not run on this scale: estimated {at_least}{cost:.0f} s{scaled}, beyond the "
            f"{max(budget - spent, 0):.0f} s left of the {budget:.0f} s budget{probes}")


def reproduce_table(table: str, scale: str, seed: int, out: Path, *, resume: bool = False, data_root: str = "",
                    progress: Progress = lambda *a: None, log: Log = print, report_only: bool = False,
                    budget_s: float | None = None) -> TableRun:
    """Tier by tier of the executor's cost order, probe the cells, then run them cheapest first while each fits the
    budget left (probes count against it); outputs in the axes' order.
    ``report_only``: no probe and no cell runs; the outputs are written from the cells already finished.
    ``budget_s``: the table's wall-time budget instead of the scale's (``report_only`` without it: the budget the
    table ran under, from its ``plan.json``)."""
    scenario = load_scenario(table)
    if scale not in scenario.scales:
        raise ScenarioError(f"unknown scale {scale!r}; known: {', '.join(scenario.scales)}")
    settings = settings_for(scenario, scale)
    folder = Path(out) / table
    key = stamp(scenario, scale, seed)
    plan_path = folder / "plan.json"
    previous = json.loads(plan_path.read_text()) if resume and plan_path.exists() else {}
    known = previous.get("cells", {}) if previous.get("stamp") == key else {}
    ran_under = previous.get("budget_s") if report_only and known else None   # the table as it was run
    budget = budget_s or ran_under or scenario.scales[scale].budget_s
    ctx = Context(data_root=data_root, seed=seed, folder=folder, scale=scale, log=log, budget_s=budget)
    cells = scenario.cells(scale)
    entries, computed, reused, records = dict(known), [], [], {}
    finished: list[dict[str, Any]] = []
    blocked: str | None = None
    for tier in _tiers(scenario, cells):
        pending = []
        for cell in tier:
            record = _finished(_cell_path(folder, cell), key) if resume else None
            if record is None:
                pending.append(cell)
                continue
            reused.append(cell.id)
            records[cell.id] = record
            finished.append(record)
        if not report_only and blocked is None:
            for cell in pending:   # the probe's lower bound stops early beyond what is left
                left = max(budget - _spent(finished, entries), 0.0)
                probe_cell(scenario, scale, settings, dataclasses.replace(ctx, budget_s=left), cell, entries,
                           plan_path, key)
        for cell in sorted(pending, key=lambda c: _run_order(entries.get(c.id, {}))):   # stable at equal cost
            progress(f"{table} cells", len(records), len(cells))
            record = _decide(scenario, cell, settings, ctx, entries, finished, budget, blocked, report_only, key,
                             progress)
            if not report_only:
                atomic_write_json(_cell_path(folder, cell), record)
                computed.append(cell.id)
            records[cell.id] = record
            if record.get("ran"):
                finished.append(record)
        blocked = blocked or _blocks([records[c.id] for c in pending], entries)
    progress(f"{table} cells", len(cells), len(cells))
    ordered = [records[c.id] for c in cells]
    rows = [row for r in ordered for row in r["rows"]]
    plan = {"stamp": key, "budget_s": budget, "cells": entries, "report_only": report_only,
            "ran": [c.id for c in cells if records[c.id].get("ran")]}
    atomic_write_json(plan_path, plan)
    meta = write_outputs(scenario, scale, seed, settings, plan, ordered, rows, folder)
    return TableRun(table, folder, computed, reused, rows, meta)


def _tiers(scenario: Scenario, cells: list[Cell]) -> list[list[Cell]]:
    """The cells in tiers of the executor's cost order (one tier where it has none): a tier is probed and run
    before the next, so a budget never pays to probe cells larger than one that did not fit."""
    tier = EXECUTORS.get(scenario.kind).tier or (lambda cell: 0.0)
    return [[c for c in cells if tier(c) == k] for k in sorted({tier(c) for c in cells})]


def _spent(finished: list[dict[str, Any]], entries: dict[str, Any]) -> float:
    return sum(r["seconds"] for r in finished) + _probed(entries)


def _probed(entries: dict[str, Any]) -> float:
    return float(sum(e.get("probe_s") or 0.0 for e in entries.values()))


def _decide(scenario: Scenario, cell: Cell, settings: Any, ctx: Context, entries: dict[str, Any],
            finished: list[dict[str, Any]], budget: float, blocked: str | None, report_only: bool, key: str,
            progress: Progress) -> dict[str, Any]:
    """Run the cell, or the record of why it is not run: it cannot run here, it does not fit the budget left, a
    smaller cell did not fit (``blocked``), or, when only writing the report, the run stopped before it."""
    entry = entries.get(cell.id, {})
    if report_only:
        reason = (admit(entry, finished, budget, _probed(entries)) if entry else None) or PENDING
        return _not_run(cell, reason, key, entry)
    if blocked is not None and not entry:
        reason = EXECUTORS.get(scenario.kind).skip(cell, settings, ctx) or blocked
        ctx.log(f"archleak: {scenario.table} {cell.id}: {reason}")
        return _not_run(cell, reason, key, entry)
    return _run_cell(scenario, cell, settings, ctx, admit(entry, finished, budget, _probed(entries)), entry, key,
                     progress, ctx.log)


def _blocks(records: list[dict[str, Any]], entries: dict[str, Any]) -> str | None:
    """Why the next tiers are not probed: a cell of this tier that could run here did not fit the budget."""
    for record in records:
        entry = entries.get(record["cell"]["id"], {})
        if not record.get("ran") and entry.get("reason") is None and entry.get("estimated_s") is not None:
            return (f"not run on this scale: larger than {record['cell']['id']}, which did not fit the budget left "
                    f"(so not probed)")
    return None


def _cell_path(folder: Path, cell: Cell) -> Path:
    return folder / "cells" / f"{cell_slug(cell.id)}.json"


def _run_order(entry: dict[str, Any]) -> tuple[int, bool, float]:
    """Cells of a lower ``rank`` first (a cell that others read), then those whose probe the attack did not refuse
    (a refused cell's rows only say so), then the cheapest."""
    return (int(entry.get("rank") or 0), bool(entry.get("not_applicable")),
            float(entry.get("estimated_s") or 0.0))


PENDING = "not run yet: the run stopped before this cell (continue with --resume)"


def _not_run(cell: Cell, reason: str, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    status = "not implemented" if reason.startswith("not implemented") else "not run"
    return {"stamp": key, "cell": cell.model_dump(), "rows": [{"cell": cell.id, "status": status, "note": reason}],
            "details": [], "seconds": 0.0, "ran": False, "estimated_s": entry.get("estimated_s")}


def _finished(path: Path, key: str) -> dict[str, Any] | None:
    """A cell that ran to the end under the same stamp (a cell left out for the budget is decided again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("stamp") == key and record.get("ran") else None


def _run_cell(scenario: Scenario, cell: Cell, settings: Any, ctx: Context, reason: str | None,
              entry: dict[str, Any], key: str, progress: Progress, log: Log) -> dict[str, Any]:
    executor = EXECUTORS.get(scenario.kind)
    tick = time.perf_counter()
    if reason is not None:
        log(f"archleak: {scenario.table} {cell.id}: {reason}")
        return _not_run(cell, reason, key, entry)
    log(f"archleak: {scenario.table} {cell.id}: running")
    result = executor.run_cell(cell, settings, ctx, progress)
    seconds = time.perf_counter() - tick
    log(f"archleak: {scenario.table} {cell.id}: done in {seconds:.0f} s")
    return {"stamp": key, "cell": cell.model_dump(), "rows": result["rows"], "details": result.get("details", []),
            "seconds": seconds, "estimated_s": entry.get("estimated_s"), "ran": True}


def write_outputs(scenario: Scenario, scale: str, seed: int, settings: Any, plan: dict[str, Any],
                  records: list[dict[str, Any]], rows: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    executor = EXECUTORS.get(scenario.kind)
    name = scenario.table
    atomic_write_bytes(folder / f"{name}.csv", csv_bytes(rows, executor.columns))
    meta = {"table": name, "title": scenario.title, "scale": scale, "seed": seed, **provenance(),
            "settings": settings.model_dump(by_alias=True), "scenario": scenario.model_dump(mode="json", by_alias=True),
            "plan": plan, "seconds_per_cell": {r["cell"]["id"]: r["seconds"] for r in records},
            "seconds": sum(r["seconds"] for r in records), "probe_seconds": _probed(plan["cells"]), "rows": rows,
            "details": {r["cell"]["id"]: r["details"] for r in records}}
    atomic_write_json(folder / f"{name}.json", meta)
    atomic_write_bytes(folder / f"{name}.md", table_markdown(scenario, executor.headline, executor.extra,
                                                             meta).encode())
    plot_table(scenario, executor.headline, rows, folder / f"{name}.png")
    return meta
