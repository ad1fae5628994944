"""The ``archleak`` command line (typer, the same stack as Flower's CLI)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.config import key_table, parse_app
from fednas.config import resolve_user_path
from fednas.data import DATASETS, available_datasets, resolve_data_root
from fednas.heap import retain_freed_memory
from fednas.storage import package_versions
from simulations.cli_amia import amia, amia_calibrate, amia_scenario, bench_amia, distill_command, serve
from simulations.cli_attack import bench_adra, bench_race, bench_similarity, reconstruct
from simulations.cli_common import emit_figures, parse_list, toml_pairs
from simulations.cli_deploy import (
    bench_defenses,
    bench_deploy,
    defend_eval_command,
    deploy_certs,
    deploy_local,
    deploy_submit,
    intercept,
)
from simulations.cli_reproduce import reproduce

app = typer.Typer(help="archleak: architecture-level privacy leakage in federated NAS.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)   # a crash must not print training images or weights
bench_app = typer.Typer(help="Benchmarks that print JSON figures.", no_args_is_help=True)
deploy_app = typer.Typer(help="Deployment-engine topologies (SuperLink, SuperNodes, on-path interceptor).",
                         no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(deploy_app, name="deploy")


@app.command()
def info(
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT, else the cache)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Versions, the resolved data root and the datasets found there."""
    root, source = resolve_data_root(str(resolve_user_path(data_root)) if data_root else "")
    found = available_datasets(root)
    report = {"versions": package_versions(), "data_root": str(root), "data_root_source": source,
              "datasets": {name: {"present": found[name], "description": DATASETS.get(name).description}
                           for name in DATASETS},
              "output_base": str(resolve_user_path("."))}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    typer.echo(f"data root: {root} (from {source})")
    typer.echo(f"relative output paths resolve under: {report['output_base']}")
    typer.echo("datasets:")
    for name, entry in report["datasets"].items():
        mark = "found" if entry["present"] else "missing (downloaded on first use)"
        if name == "cifar10-subset" and not entry["present"]:
            mark = "missing (offline npz; cannot be downloaded)"
        typer.echo(f"  {name:15s} {mark:45s} {entry['description']}")


@app.command("config")
def show_config(
    markdown: Annotated[bool, typer.Option(help="print the run-config keys as a Markdown table")] = False,
) -> None:
    """The run-config keys with their defaults (as JSON, or the Markdown tables of docs/run-config.md)."""
    if markdown:
        typer.echo(key_table(), nl=False)
        return
    typer.echo(json.dumps(parse_app({}).to_flower(), indent=2))


@bench_app.command("fednas")
def bench_fednas(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    quick: Annotated[bool, typer.Option(help="fewer repetitions and clients (a smoke run)")] = False,
) -> None:
    """Seconds per local search step, seconds per round against clients, memory for 100 clients."""
    from simulations.bench_fednas import run_benchmark

    figures = run_benchmark(data_root=data_root, quick=quick)
    emit_figures(figures, json_path)


@bench_app.command("methods")
def bench_methods(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    methods: Annotated[str, typer.Option(help="comma list of search methods")] = "darts,pdarts,enas,smash",
    clients: Annotated[int, typer.Option(min=2, help="Ray-simulated clients")] = 2,
    out: Annotated[Path, typer.Option(help="one run folder per method under this folder")] = Path("bench-methods"),
    run_config: Annotated[list[str], typer.Option("--run-config", help="run-config key=value (TOML)")] = [],  # noqa: B006
) -> None:
    """Every search method at the same training budget: test accuracy with its interval, the gap to DARTS."""
    from fednas.config import resolve_user_path
    from fednas.methods import SEARCH_METHODS
    from simulations.bench_methods import compare

    chosen = [m for m in methods.split(",") if m]
    try:
        for name in chosen:
            SEARCH_METHODS.get(name)   # an unknown name: one line listing the known ones
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--methods") from None
    root, _ = resolve_data_root(data_root)
    overrides = {"data-root": str(root), **toml_pairs(run_config)}
    emit_figures(compare(overrides, chosen, clients, resolve_user_path(str(out)),
                         log=lambda line: typer.echo(line, err=True)), json_path)


@bench_app.command("reward")
def bench_reward(
    run: Annotated[Path, typer.Option(help="an ENAS run folder (search-method = enas)")],
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    trials: Annotated[int, typer.Option(min=100, help="public batches the attacker simulates")] = 20_000,
) -> None:
    """What ENAS's scalar rewards reveal about their D^α batches' class balance (an upper bound)."""
    from simulations.bench_reward import reward_leakage

    try:
        figures = reward_leakage(run, data_root, trials)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--run") from None
    emit_figures(figures, json_path)


@bench_app.command("search")
def bench_search(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds (medians)")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="steps per round and path")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    run_config: Annotated[list[str], typer.Option("--run-config", help="run-config key=value (TOML)")] = [],  # noqa: B006
) -> None:
    """The local search step (θ step + α step) on the fast path against the plain supernet, in one process."""
    from simulations.bench_search import step_ratio

    root, _ = resolve_data_root(data_root)
    overrides = {"dataset": "mnist", "data-root": str(root), **toml_pairs(run_config)}
    emit_figures(step_ratio(overrides, rounds, steps, threads), json_path)


@bench_app.command("inversion")
def bench_inversion(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    rows: Annotated[str, typer.Option(help="row counts (captures x restarts optimised together), comma list")] = (
        "1,8,16,32"),
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds (medians)")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 1,
    run_config: Annotated[list[str], typer.Option("--run-config", help="run-config key=value (TOML)")] = [],  # noqa: B006
) -> None:
    """One evaluation of the Δθ inversion (replay, match, double backward) on both replay paths, in one process."""
    from simulations.bench_inversion import inversion_ratio

    root, _ = resolve_data_root(data_root)
    try:
        counts = parse_list(rows, int)
    except ValueError:
        raise typer.BadParameter(f"--rows expects a comma list of row counts, got {rows!r}") from None
    if not counts or min(counts) < 1:
        raise typer.BadParameter(f"--rows: rows must be positive counts of rows, got {rows!r}")
    overrides = {"dataset": "mnist", "data-root": str(root), **toml_pairs(run_config)}
    emit_figures(inversion_ratio(overrides, counts, rounds, threads=threads), json_path)


@bench_app.command("target")
def bench_target(
    recipe: Annotated[str, typer.Option(help="the README's trained target: mnist or cifar10-subset")] = "mnist",
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    clients: Annotated[int, typer.Option(min=1, max=64, help="clients (SuperNodes), one CPU each")] = 4,
    engine: Annotated[str, typer.Option(help="where the clients run: ray or in-process")] = "ray",
    run_config: Annotated[list[str], typer.Option("--run-config", help="run-config key=value (TOML) on top")] = [],  # noqa: B006
) -> None:
    """The README's trained target as one timed federation: test accuracy after every round, seconds, wall time."""
    from simulations.bench_target import RECIPES, time_target

    try:
        RECIPES.get(recipe)   # an unknown name: one line listing the known ones
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--recipe") from None
    root, _ = resolve_data_root(data_root)
    overrides = {"data-root": str(root), **toml_pairs(run_config)}
    emit_figures(time_target(recipe, overrides, clients, engine), json_path)


@bench_app.command("interceptor")
def bench_interceptor(
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    clients: Annotated[int, typer.Option(help="simulated clients")] = 4,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 3,
    modes: Annotated[str, typer.Option(help="interceptor modes, comma list: off, capture, live, after-run")] =
        "off,capture,live,after-run",
    repeats: Annotated[int, typer.Option(min=1, help="runs per mode, interleaved (ratios use medians)")] = 1,
) -> None:
    """Per-round cost of the tap and of a live attacker; extra wall time of the after-run attack."""
    from simulations.bench_interceptor import check_modes, run_interceptor_bench

    try:
        chosen = tuple(check_modes([m.strip() for m in modes.split(",") if m.strip()]))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    figures = run_interceptor_bench(data_root, clients, rounds, chosen, repeats)
    emit_figures(figures, json_path)


app.command("reconstruct")(reconstruct)
app.command("amia")(amia)
app.command("amia-scenario")(amia_scenario)
app.command("reproduce")(reproduce)
app.command("amia-calibrate")(amia_calibrate)
app.command("serve")(serve)
app.command("distill")(distill_command)
bench_app.command("amia")(bench_amia)
bench_app.command("adra")(bench_adra)
bench_app.command("race")(bench_race)
bench_app.command("similarity")(bench_similarity)
bench_app.command("deploy")(bench_deploy)
bench_app.command("defenses")(bench_defenses)
app.command("intercept")(intercept)
app.command("defend-eval")(defend_eval_command)
deploy_app.command("local")(deploy_local)
deploy_app.command("submit")(deploy_submit)
deploy_app.command("certs")(deploy_certs)


def main(argv: list[str] | None = None) -> None:
    """The console entry point: a failure the commands did not turn into a usage error ends in one line on stderr
    (exit 1) naming the error, never a traceback with local variables; ``ARCHLEAK_DEBUG=1`` shows the traceback.
    Freed memory is kept for reuse (:mod:`fednas.heap`)."""
    retain_freed_memory()
    try:
        app(args=argv)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("ARCHLEAK_DEBUG"):
            raise
        message = (str(exc).strip().splitlines() or [""])[0]
        typer.echo(f"archleak: error: {type(exc).__name__}: {message} (ARCHLEAK_DEBUG=1 shows the traceback)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover - ``python -m simulations.cli`` (used by the local launcher)
    main()
