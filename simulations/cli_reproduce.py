"""``archleak reproduce TABLE``: the paper's tables re-measured (see :mod:`simulations.reproduce`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulations.cli_common import stage_bars


def reproduce(
    table: Annotated[str, typer.Argument(help="table1 … table6, or all")],
    scale: Annotated[str, typer.Option(help="ci (minutes, for tests), cpu (≤ 90 min a table on 2 cores), "
                                            "paper (the paper's settings, for a GPU machine)")] = "cpu",
    seed: Annotated[int, typer.Option(min=0, help="the one seed behind every cell")] = 0,
    resume: Annotated[bool, typer.Option(help="keep finished cells of an earlier run with the same scenario, "
                                              "scale and seed")] = False,
    out: Annotated[Path, typer.Option(help="output folder (one subfolder per table)")] = Path("reproduce"),
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: torch's default)")] = 0,
    report_only: Annotated[bool, typer.Option(help="run nothing: write the tables (and REPORT.md) from the cells "
                                                   "already finished in --out")] = False,
    budget_s: Annotated[float, typer.Option(min=0, help="each table's wall-time budget in seconds instead of the "
                                                        "scale's (0: the scale's), e.g. on a loaded machine; the "
                                                        "table's JSON records the budget it ran under")] = 0.0,
) -> None:
    """Re-measure one of the paper's tables (or all, with REPORT.md) cell by cell, with intervals beside the
    paper's numbers; a stopped run continues with --resume from its last finished cell. ``all`` keeps within the
    scale's whole-run budget (cpu: 6 hours): a table gets what is left of it when that is less than its own."""
    from fednas.config import resolve_user_path
    from fednas.data import resolve_data_root
    from fednas.storage import atomic_write_bytes
    from simulations.reproduce.executors import EXECUTORS
    from simulations.reproduce.report import report_markdown
    from simulations.reproduce.runner import reproduce_table
    from simulations.reproduce.scenario import ALL_BUDGET_S, SCALES, ScenarioError, known_tables, load_scenario

    if scale not in SCALES:
        raise typer.BadParameter(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    tables = list(known_tables()) if table == "all" else [table]
    try:
        scenarios = [load_scenario(t) for t in tables]
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc)) from None
    if threads:
        import torch

        torch.set_num_threads(threads)
    root = str(resolve_data_root(data_root)[0])
    folder = resolve_user_path(str(out))
    tick, bars = stage_bars() if progress else (lambda *a: None, {})
    done = []
    left = ALL_BUDGET_S[scale] if table == "all" and not report_only else float("inf")
    for scenario in scenarios:
        own = budget_s or scenario.scales[scale].budget_s   # type: ignore[index]
        given = (budget_s or None) if own <= left else max(left, 1.0)   # all: what is left of the whole run's
        try:
            result = reproduce_table(scenario.table, scale, seed, folder, resume=resume or report_only,
                                     data_root=root, progress=tick, log=lambda line: typer.echo(line, err=True),
                                     report_only=report_only, budget_s=given)
        except ScenarioError as exc:
            raise typer.BadParameter(str(exc)) from None
        typer.echo(f"{scenario.table}: {len(result.computed)} cell(s) computed, {len(result.reused)} reused; "
                   f"{result.folder / (scenario.table + '.md')}")
        done.append((scenario, result))
        left -= result.meta["seconds"] + result.meta["probe_seconds"]
    for bar in bars.values():
        bar.close()
    if table == "all":
        sections = [(s, EXECUTORS.get(s.kind).headline, r.meta) for s, r in done]
        atomic_write_bytes(folder / "REPORT.md", report_markdown(sections).encode())
        typer.echo(f"report: {folder / 'REPORT.md'}")
