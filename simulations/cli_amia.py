"""``archleak amia``, ``archleak serve`` and ``archleak bench amia``: membership inference from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulations.cli_common import emit_figures, parse_list, settings_from, stage_bars, toml_pairs


def amia_config(shadow: str, shadows: int, eta: float, seed: int, settings: list[str], attack: str = "ml-leaks"):
    """The AMIA config from the named options plus ``--set key=value`` pairs (a bad value is a usage error)."""
    from attacker.membership.amia import AmiaConfig

    return settings_from(AmiaConfig, {"shadow": shadow, "shadows": shadows, "eta": eta, "seed": seed,
                                      "attack": attack}, settings)


def amia(
    run: Annotated[Path, typer.Option(help="the run folder of a finished federated search")],
    shadow: Annotated[str, typer.Option(help="shadow kind: fixed (ResNet) or searchable (DARTS on shadow data)")
                      ] = "fixed",
    shadows: Annotated[int, typer.Option(help="number of shadow models")] = 1,
    eta: Annotated[float, typer.Option(help="share of the attacker's data from the target's distribution, (0, 1]")
                   ] = 1.0,
    seed: Annotated[int, typer.Option(help="the AMIA seed")] = 0,
    attack: Annotated[str, typer.Option(help="ml-leaks (the paper's), lira (offline), lira-online or rmia, or a comma "
                                             "list to compare them side by side; the last three train --set "
                                             "references=N reference models (cached, shared)")
                      ] = "ml-leaks",
    url: Annotated[str, typer.Option(help="query this prediction service (archleak serve) instead of loading the "
                                          "model in process")] = "",
    model: Annotated[str, typer.Option(help="in process: global (the searched model) or student (DMP)")] = "global",
    members: Annotated[str, typer.Option(help="member kinds, comma list of alpha, alpha-used, theta (default: all)")
                       ] = "",
    clients: Annotated[str, typer.Option(help="partition ids whose data are the members (default: all)")] = "",
    num_clients: Annotated[int, typer.Option(help="clients of the run, when its evaluation log does not say")] = 0,
    out: Annotated[Path | None, typer.Option(help="output folder (default: <run>/amia/<shadow>-eta<η>-seed<seed>)")
                   ] = None,
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    settings: Annotated[list[str], typer.Option("--set", help="AMIA key=value, e.g. shadow-epochs=20")] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Architectural membership inference against a run's global model; writes amia.md/.csv/.json, roc.png and
    scores.npz."""
    import torch

    from attacker.membership.evaluate import evaluate_run
    from attacker.membership.report import amia_markdown, comparison_markdown, write_comparison, write_report
    from fednas.run_folder import RunNotFound
    from simulations.targets import target_box

    names = parse_list(attack) or ["ml-leaks"]
    configs = {name: amia_config(shadow, shadows, eta, seed, settings, name) for name in dict.fromkeys(names)}
    cfg = next(iter(configs.values()))
    suffix = ("" if model == "global" else f"-{model}") + ("" if names == ["ml-leaks"] else f"-{'+'.join(configs)}")
    folder = out or run / "amia" / f"{cfg.shadow}-eta{cfg.eta:g}-seed{cfg.seed}{suffix}"
    tick, bars = stage_bars() if progress else (lambda *a: None, {})
    results = {}
    try:
        target = target_box(run, url, model, torch.device(cfg.device), data_root)
        for name, config in configs.items():
            results[name] = evaluate_run(run, config, target, data_root=data_root,
                                         clients=tuple(parse_list(clients, int)), kinds=tuple(parse_list(members)),
                                         num_clients=num_clients, progress=tick,
                                         log=lambda line: typer.echo(line, err=True))
    except (RunNotFound, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    for bar in bars.values():
        bar.close()
    if len(results) == 1:
        write_report(results[cfg.attack], folder)
        typer.echo(amia_markdown(results[cfg.attack]))
    else:
        write_comparison(results, folder)
        typer.echo(comparison_markdown(results))
    typer.echo(f"results in {folder}")


def serve(
    run: Annotated[Path, typer.Argument(help="the run folder whose global model answers")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: a free one)")] = 8080,
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    model: Annotated[str, typer.Option(help="global (the searched model) or student (after archleak distill)")
                     ] = "global",
) -> None:
    """Serve the run's global model as a prediction API (GET /v1/info, POST /v1/predict) until Ctrl-C."""
    import torch

    from fednas.http_server import PredictionService
    from fednas.run_folder import RunNotFound
    from simulations.targets import load_target

    try:
        target = load_target(run, torch.device(device), data_root, model, log=lambda line: typer.echo(line, err=True))
        service = PredictionService(target, host, port)
    except (RunNotFound, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"archleak serve: {target.info()['model']} of {run} at {service.url} "
               "(GET /v1/info, POST /v1/predict)", err=True)
    try:
        service.serve_forever()
    finally:
        service.socket.close()
        typer.echo(f"archleak serve: stopped after {service.served} predictions", err=True)


def bench_amia(
    run: Annotated[Path, typer.Option(help="the run folder to attack")],
    shadow: Annotated[str, typer.Option(help="shadow kinds, comma list")] = "fixed,searchable",
    eta: Annotated[str, typer.Option(help="η values, comma list")] = "1.0",
    seed: Annotated[int, typer.Option(help="the AMIA seed")] = 0,
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    settings: Annotated[list[str], typer.Option("--set", help="AMIA key=value")] = [],  # noqa: B006
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """Wall time per stage and attack quality (accuracy, AUC, TPR at low FPR) for each shadow kind and η."""
    from simulations.amia_tables import bench_cases

    cases = [amia_config(s, 1, e, seed, settings) for s in parse_list(shadow) for e in parse_list(eta, float)]
    emit_figures(bench_cases(run, cases, data_root), json_path)


def amia_scenario(
    name: Annotated[str, typer.Argument(help="table3 (network scale), table4 (fixed vs searchable shadow), "
                                             "table5 (η sweep)")],
    run: Annotated[Path | None, typer.Option(help="attack this run (table4, table5); default: search one first")
                   ] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("amia-scenarios"),
    clients: Annotated[int, typer.Option(help="clients of the searches this scenario runs")] = 2,
    columns: Annotated[str, typer.Option(help="only these columns, comma list (e.g. 'P=32,P=64')")] = "",
    seed: Annotated[int, typer.Option(help="the AMIA seed")] = 0,
    run_config: Annotated[list[str], typer.Option("--run-config", help="run-config key=value (TOML) for the "
                                                                      "searches this scenario runs")] = [],  # noqa: B006
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    settings: Annotated[list[str], typer.Option("--set", help="AMIA key=value")] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """One of the paper's AMIA tables (3–5) as a scenario; writes <name>.md/.csv/.json and one AMIA folder per
    column."""
    from app.config import parse_app
    from fednas.config import resolve_user_path
    from fednas.schema import ConfigError
    from simulations.amia_tables import SCENARIOS, run_scenario

    try:
        known = [c.label for c in SCENARIOS.get(name)]
        unknown = sorted(set(parse_list(columns)) - set(known))
        if unknown:
            raise ValueError(f"unknown column(s) {unknown} of {name}; known: {', '.join(known)}")
        base = toml_pairs(run_config)
        parse_app(base)
    except (ValueError, ConfigError) as exc:
        raise typer.BadParameter(str(exc)) from None
    cfg = amia_config("fixed", 1, 1.0, seed, settings)
    tick, bars = stage_bars() if progress else (lambda *a: None, {})
    folder = resolve_user_path(str(out))
    rows = run_scenario(name, folder, run_dir=run, base_run=base, amia=cfg, clients=clients, data_root=data_root,
                        only=tuple(parse_list(columns)), progress=tick, log=lambda line: typer.echo(line, err=True))
    for bar in bars.values():
        bar.close()
    typer.echo((folder / f"{name}.md").read_text())
    typer.echo(f"{len(rows)} column(s); results in {folder}")


def distill_command(
    run: Annotated[Path, typer.Argument(help="the run folder whose global model is the teacher")],
    data_root: Annotated[str, typer.Option(help="data folder (default: the run's)")] = "",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    settings: Annotated[list[str], typer.Option("--set", help="DMP key=value, e.g. keep-fraction=0.3")] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """DMP: train a student on the teacher's soft labels of low-entropy public data; writes RUN/distilled/."""
    import torch

    from defenses.distill_run import distill_run
    from defenses.distillation import DistillConfig
    from fednas.run_folder import RunNotFound

    cfg = settings_from(DistillConfig, {}, settings)
    tick, bars = stage_bars() if progress else (lambda *a: None, {})
    try:
        record = distill_run(run, cfg, torch.device(device), data_root, lambda d, t: tick("student", d, t))
    except (RunNotFound, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    for bar in bars.values():
        bar.close()
    typer.echo(f"student ({cfg.student}) trained on {record['kept']} of {record['reference']} public samples: "
               f"test accuracy {record['student_test_accuracy']:.3f} (teacher {record['teacher_test_accuracy']:.3f}); "
               f"{record['seconds']:.1f}s")
    typer.echo(f"serve it with: archleak serve {run} --model student; attack it with: archleak amia --run {run} "
               "--model student")


def amia_calibrate(
    dataset: Annotated[str, typer.Option(help="dataset of the calibration target")] = "mnist",
    members: Annotated[int, typer.Option(help="members of the overfitted target (and as many non-members)")] = 500,
    pool: Annotated[int, typer.Option(help="the attacker's own images (shadows, references, population)")] = 2000,
    target_epochs: Annotated[int, typer.Option(help="epochs of the target on its members (overfitting)")] = 40,
    references: Annotated[int, typer.Option(help="reference models for LiRA and RMIA (cached)")] = 16,
    seed: Annotated[int, typer.Option(help="the calibration seed")] = 0,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    out: Annotated[str, typer.Option(help="output folder (relative: under $ARCHLEAK_HOME, else ~/archleak)")
                   ] = "amia-calibrate",
    settings: Annotated[list[str], typer.Option("--set", help="AMIA key=value, e.g. shadow-epochs=20")] = [],  # noqa: B006
) -> None:
    """Every membership attack (ml-leaks, lira, lira-online, rmia) against a weight-level target that overfits:
    AUC with intervals, TPR at 1% and 0.1% FPR, one log-log ROC plot (calibration.md/.json, roc.png)."""
    from attacker.membership.amia import AmiaConfig
    from fednas.config import resolve_user_path
    from fednas.data import resolve_data_root
    from simulations.calibrate import calibrate

    cfg = settings_from(AmiaConfig, {"seed": seed, "references": references}, settings)
    root = str(resolve_data_root(data_root)[0])
    folder = resolve_user_path(out)
    try:
        result = calibrate(dataset, root, cfg, members, pool, target_epochs, folder,
                           log=lambda line: typer.echo(line, err=True))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo((folder / "calibration.md").read_text())
    typer.echo(f"results in {folder} (order at 0.1% FPR: {' > '.join(result['order_at_0.1%_fpr'])})")
