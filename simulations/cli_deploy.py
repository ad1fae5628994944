"""``archleak intercept`` (the on-path proxy) and ``archleak deploy local`` (the compose topology as processes)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from attacker.interceptor.config import InterceptorConfig
from fednas.config import resolve_user_path
from simulations.cli_common import emit_figures, settings_from, toml_pairs

PROXY_MODES = ("capture", "live", "after-run")
APP_DIR = Path(__file__).resolve().parent.parent


def run_proxy(listen: str, upstream: str, captures: Path, settings: InterceptorConfig,
              log=print, evaluation_runs: Path | None = None) -> dict:
    """Relay until SIGINT/SIGTERM, then let the attacker finish; returns the proxy report."""
    from app.config import SECTIONS
    from attacker.interceptor.deployed import DeployedRuns
    from attacker.interceptor.proxy import InterceptProxy, parse_address, summary_line

    addresses = parse_address(listen), parse_address(upstream)   # ValueError in one line

    async def main() -> dict:
        runs = DeployedRuns(captures, settings, SECTIONS, log=log, evaluation_runs=evaluation_runs)
        proxy = InterceptProxy(*addresses, captures, attacker=runs, log=log)
        try:
            await proxy.start()
        except OSError as exc:
            raise ValueError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log("archleak proxy: stopping; finishing the attacks on what was captured")
        report = await proxy.stop()
        log(summary_line(report))
        return report

    return asyncio.run(main())


def intercept(
    listen: Annotated[str, typer.Option(help="HOST:PORT the SuperNodes connect to (host defaults to 127.0.0.1)")
                      ] = "127.0.0.1:9099",
    upstream: Annotated[str, typer.Option(help="the SuperLink's HOST:PORT (its Fleet HTTP API)")] = "127.0.0.1:8000",
    captures: Annotated[str, typer.Option(help="folder for <run-id>/captures, reconstructions and gallery "
                                               "(relative: under $ARCHLEAK_HOME, else ~/archleak)")] = "intercepted",
    attack: Annotated[str, typer.Option(help="capture (store only), live (attack while the run goes on), "
                                             "after-run (attack when the proxy stops)")] = "live",
    threat_model: Annotated[str, typer.Option(help="architecture-only or wire")] = "wire",
    settings: Annotated[list[str], typer.Option("--set", help="attack key=value, e.g. attack-iterations=100")] = [],  # noqa: B006
    evaluation_runs: Annotated[Path | None, typer.Option(
        help="the federation's output-dir, where the clients write the evaluation-only log (<dir>/<run-id>): "
             "used to score reconstructions, never by the attack; without it the report says \"not scored\"")
    ] = None,
) -> None:
    """A transparent on-path proxy between SuperNodes and SuperLink: relays every byte unchanged, rebuilds the
    messages it sees into captures and attacks them. Stop it with Ctrl-C; it then reports what it saw."""
    if attack not in PROXY_MODES:
        raise typer.BadParameter(f"--attack must be one of {', '.join(PROXY_MODES)}, got {attack!r}")
    chosen = settings_from(InterceptorConfig, {"interceptor": attack, "threat-model": threat_model}, settings)
    folder = resolve_user_path(captures)
    try:
        report = run_proxy(listen, upstream, folder, chosen, log=lambda line: typer.echo(line, err=True),
                           evaluation_runs=evaluation_runs.resolve() if evaluation_runs else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps({"captures": str(folder), "wire": report["wire"], "proxy": report["proxy"],
                           "inspectable": report["inspectable"]}, indent=2))


def deploy_local(
    clients: Annotated[int, typer.Option(help="SuperNodes (one partition each)")] = 2,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 2,
    tls: Annotated[bool, typer.Option(help="TLS between SuperNodes and SuperLink (self-signed CA in <workdir>/certs)")
                   ] = False,
    interceptor: Annotated[bool, typer.Option(help="put the on-path proxy between SuperNodes and SuperLink")] = True,
    attack: Annotated[str, typer.Option(help="the proxy's mode: capture, live or after-run")] = "after-run",
    threat_model: Annotated[str, typer.Option(help="architecture-only or wire")] = "wire",
    workdir: Annotated[str, typer.Option(help="logs, FLWR_HOME, runs/ and intercepted/ (relative: under "
                                              "$ARCHLEAK_HOME, else ~/archleak)")] = "deploy-local",
    run_config: Annotated[list[str], typer.Option("--run-config", help="app key=value (TOML value), repeatable")] = [],  # noqa: B006
    settings: Annotated[list[str], typer.Option("--set", help="attack key=value for the proxy")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="seconds for the run (and for the proxy's attacks)")] = 3600.0,
) -> None:
    """Run the docker-compose topology as local processes on 127.0.0.1 and stop everything afterwards."""
    from simulations.deploy import DeployPlan, LocalDeployment

    if attack not in PROXY_MODES:
        raise typer.BadParameter(f"--attack must be one of {', '.join(PROXY_MODES)}, got {attack!r}")
    overrides = toml_pairs(run_config)
    plan = DeployPlan(clients=clients, rounds=rounds, tls=tls, interceptor=interceptor, attack=attack,
                      threat_model=threat_model, workdir=resolve_user_path(workdir), app_dir=APP_DIR,
                      run_config=overrides, attack_settings=tuple(settings), timeout_s=timeout)
    say = lambda line: typer.echo(line, err=True)
    with LocalDeployment(plan, log=say) as deployment:
        say(f"archleak deploy: superlink 127.0.0.1:{deployment.ports['superlink']}, "
            + (f"proxy 127.0.0.1:{deployment.ports['proxy']}, " if interceptor else "no interceptor, ")
            + f"{clients} supernode(s){', TLS' if tls else ''}; logs in {deployment.logs}")
        result = deployment.run()
    result["stopped"] = deployment.stop_codes
    if interceptor:
        report = plan.workdir / "intercepted" / "proxy.json"
        result["interceptor"] = json.loads(report.read_text()) if report.exists() else None
    typer.echo(json.dumps(result, indent=2, default=str))
    if not result["completed"]:
        raise typer.Exit(1)


def deploy_submit(
    superlink: Annotated[str, typer.Option(help="the SuperLink's HOST:PORT (Control API)")] = "127.0.0.1:8000",
    app_dir: Annotated[Path, typer.Option("--app", help="the Flower App folder")] = APP_DIR,
    root_certificates: Annotated[Path | None, typer.Option(help="CA certificate for TLS (default: insecure)")] = None,
    run_config: Annotated[list[str], typer.Option("--run-config", help="app key=value (TOML value), repeatable")] = [],  # noqa: B006
    retries: Annotated[int, typer.Option(help="attempts while the SuperLink is still starting")] = 30,
) -> None:
    """Submit one run to a running SuperLink and stream its log (the compose file's ``submit`` service)."""
    import tempfile
    import time

    from simulations.deploy import submit_run

    config = toml_pairs(run_config)
    with tempfile.TemporaryDirectory(prefix="archleak-flwr-") as home:
        for attempt in range(1, retries + 1):
            code, _ = submit_run(app_dir, superlink, config, Path(home), root_certificates, None)
            if code == 0:
                return
            typer.echo(f"archleak deploy submit: flwr run exited {code} (attempt {attempt}/{retries})", err=True)
            time.sleep(5)
    raise typer.Exit(1)


def deploy_certs(
    folder: Annotated[Path, typer.Argument(help="where ca.crt, server.pem and server.key go")] = Path("deploy/certs"),
    names: Annotated[list[str], typer.Option("--name", help="names the SuperLink certificate covers")] = [],  # noqa: B006
) -> None:
    """A self-signed CA and a SuperLink certificate for the TLS variant (local launcher and compose)."""
    from simulations.certs import DEFAULT_NAMES, generate_certificates

    paths = generate_certificates(folder, tuple(names) or DEFAULT_NAMES)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


def bench_deploy(
    clients: Annotated[str, typer.Option(help="client counts, comma list")] = "2,4",
    rounds: Annotated[int, typer.Option(help="federated rounds per run")] = 2,
    run_config: Annotated[list[str], typer.Option("--run-config", help="app key=value (TOML value), repeatable")] = [],  # noqa: B006
    requests: Annotated[int, typer.Option(help="requests per latency measurement")] = 300,
    skip_runs: Annotated[bool, typer.Option(help="latency only")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """The proxy's added latency per request and the run-time ratio with/without it (local launcher)."""
    import tempfile

    from fednas.storage import package_versions
    from simulations.bench_deploy import latency, run_times

    figures: dict = {"latency": asyncio.run(latency(requests)), "versions": package_versions()}
    if not skip_runs:
        config = toml_pairs(run_config)
        with tempfile.TemporaryDirectory(prefix="archleak-bench-") as tmp:
            figures["runs"] = run_times([int(c) for c in clients.split(",")], rounds, config, Path(tmp))
        figures["run_config"] = config
    emit_figures(figures, json_path)


def defend_eval_command(
    cases: Annotated[str, typer.Option(help="comma list of cases (see simulations/defend_eval.py CASES)")] =
        "none,dp-sgd-alpha-paper,dp-sgd-alpha σ=1,l2-alpha λ=0.01,input-noise s=0.1,local-dp-update ε=8,"
        "central-dp σ=1,md (DMP student)",
    clients: Annotated[int, typer.Option(help="simulated clients")] = 2,
    rounds: Annotated[int, typer.Option(help="federated rounds")] = 2,
    run_config: Annotated[list[str], typer.Option("--run-config", help="app key=value (TOML value), repeatable")] = [],  # noqa: B006
    out: Annotated[str, typer.Option(help="output folder (relative: under $ARCHLEAK_HOME, else ~/archleak)")] =
        "defend-eval",
    amia: Annotated[bool, typer.Option(help="also run AMIA (fixed shadow) against each case's served model")] = True,
    amia_settings: Annotated[list[str], typer.Option("--amia-set", help="AMIA key=value, e.g. shadow-size=200")] = [],  # noqa: B006
    distill_settings: Annotated[list[str], typer.Option("--distill-set", help="DMP key=value for the md case")] = [],  # noqa: B006
) -> None:
    """Run the same seeded federation with each defense and without, attack each (ADRA on the wire, AMIA on the
    served model), write the defense table (Markdown, CSV, privacy-utility plot, JSON)."""
    from attacker.membership.amia import AmiaConfig
    from defenses.distillation import DistillConfig
    from simulations.defend_eval import CASES, defend_eval

    chosen = {}
    for name in (c.strip() for c in cases.split(",") if c.strip()):
        if name not in CASES:
            raise typer.BadParameter(f"unknown case {name!r}; known: {', '.join(CASES)}")
        chosen[name] = CASES[name]
    base = {"num-server-rounds": rounds, **toml_pairs(run_config)}
    folder = resolve_user_path(out)
    amia_cfg = settings_from(AmiaConfig, {}, amia_settings).model_dump(by_alias=True) if amia else None
    distill_cfg = settings_from(DistillConfig, {}, distill_settings).model_dump(by_alias=True)
    try:
        report = defend_eval(base, chosen, clients, folder, amia_cfg, distill_cfg)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo((folder / "defenses.md").read_text())
    typer.echo(f"table, CSV, plot and JSON in {folder} ({len(report['rows'])} cases)")


def bench_defenses(
    cases: Annotated[str, typer.Option(help="comma list: dp-sgd-alpha, l2-alpha, input-noise")] =
        "dp-sgd-alpha,l2-alpha,input-noise",
    clients: Annotated[int, typer.Option(help="partitions (the client's share of the data)")] = 4,
    repeats: Annotated[int, typer.Option(help="rounds timed per case (median)")] = 3,
    run_config: Annotated[list[str], typer.Option("--run-config", help="app key=value (TOML value), repeatable")] = [],  # noqa: B006
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """Each defense's cost per client round against no defense (one process, same seed and broadcast)."""
    from fednas.storage import package_versions
    from simulations.bench_defenses import CASES, run_defense_bench

    names = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise typer.BadParameter(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    figures = {**run_defense_bench(toml_pairs(run_config), names, clients, repeats),
               "versions": package_versions()}
    emit_figures(figures, json_path)
