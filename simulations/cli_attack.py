"""``archleak reconstruct`` and ``archleak bench adra``: the eavesdropper from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attacker.interceptor.config import InterceptorConfig
from attacker.reconstruct.settings import AttackSettings
from fednas.schema import ConfigError
from fednas.storage import atomic_write_bytes
from simulations.cli_common import emit_figures, key_values, parse_list, settings_from


def reconstruct(
    target: Annotated[Path, typer.Argument(help="a run folder, or its captures/ folder")],
    threat_model: Annotated[str | None, typer.Option(help="architecture-only or wire (default: the run's)")] = None,
    attacks: Annotated[str | None, typer.Option(help="adra, theta, joint: comma list (default: the run's)")] = None,
    settings: Annotated[list[str], typer.Option("--set", help="attack key=value, e.g. attack-iterations=100")] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    evaluation_dir: Annotated[Path | None, typer.Option(
        help="the federation's run folder holding the clients' evaluation-only log, for scoring (default: the "
             "run folder, or what the proxy recorded; a deployment writes it under the SuperLink side's "
             "runs/<run-id>)")] = None,
) -> None:
    """Attack the stored captures of a run offline; writes reconstructions/<threat-model>/ (PNG grids, metrics,
    index.html)."""
    from tqdm import tqdm

    from attacker.interceptor.interceptor import Interceptor
    from attacker.reconstruct.attacks import ATTACKS
    from fednas.run_folder import RunFolder

    run_dir = target.parent if target.name == "captures" else target
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise typer.BadParameter(f"{run_dir} is not a run folder (no config.json)")
    try:
        base = folder.section(InterceptorConfig).model_dump(by_alias=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if threat_model:
        base["threat-model"] = threat_model
    if attacks:
        base["attacks"] = attacks
    chosen = settings_from(InterceptorConfig, base, settings)
    try:
        interceptor = Interceptor(run_dir, chosen, log=lambda line: typer.echo(line, err=True),
                                  evaluation_dir=evaluation_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    pending = interceptor.pending()
    typer.echo(f"{len(pending)} capture(s) to attack under the {chosen.threat_model} threat model")
    per_capture = sum(ATTACKS.get(n).stage(chosen).iterations for n in chosen.attack_names())
    bar = tqdm(total=len(pending) * per_capture, disable=not progress, unit="it")
    interceptor.process(pending, callbacks=[lambda p: bar.update(1)])
    bar.close()
    typer.echo(interceptor.report())
    typer.echo(f"gallery: {interceptor.out / 'index.html'}")


def bench_adra(
    threat: Annotated[str, typer.Option(help="architecture-only, wire, or both (comma list)")
                      ] = "architecture-only,wire",
    attack: Annotated[str, typer.Option(help="adra (Δα), theta (Δθ), joint: comma list")] = "adra",
    batch_size: Annotated[str, typer.Option(help="B values, comma list")] = "1",
    activation: Annotated[str, typer.Option(help="activations, comma list")] = "elu",
    alpha_size: Annotated[str, typer.Option(help="α sizes, comma list (224 = shared default)")] = "224",
    images: Annotated[int, typer.Option(help="number of MNIST test images")] = 8,
    indices: Annotated[str, typer.Option(help="START:END of the test images (overrides --images)")] = "",
    train_steps: Annotated[int, typer.Option(help="θ steps on public data before the capture (0: round 0)")] = 0,
    compare_sequential: Annotated[bool, typer.Option(help="also time 32 captures batched vs a loop")] = False,
    sweep: Annotated[bool, typer.Option(help="vary one factor at a time around the first value of each list")] = False,
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    settings: Annotated[list[str], typer.Option("--set", help="attack key=value, e.g. attack-iterations=100")] = [],  # noqa: B006
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """Success rates of ADRA / Δθ inversion / joint (each criterion, label-only baseline, chance), PSNR/SSIM and
    seconds per image."""
    from fednas.data import resolve_data_root
    from fednas.storage import atomic_write_json
    from simulations.bench_adra import cases_for, result_line, run_adra_bench

    if indices:
        start, _, end = indices.partition(":")
        span = range(int(start), int(end))
    else:
        span = range(images)
    threats = ["architecture-only", "wire"] if threat == "both" else parse_list(threat)
    chosen = settings_from(AttackSettings, {"attacks": attack}, settings)
    root, _ = resolve_data_root(data_root)
    cases = cases_for(threats, parse_list(batch_size, int), parse_list(activation), parse_list(alpha_size, int),
                      sweep)

    def progress(so_far: dict, result: dict) -> None:   # long sweeps: a line per case, partial figures kept
        typer.echo(f"[{len(so_far['cases'])}/{len(cases) * len(chosen.attack_names())}] {result_line(result)}",
                   err=True)
        if json_path:
            atomic_write_json(json_path, so_far)

    figures = run_adra_bench(cases, span, chosen, str(root), train_steps, compare_sequential,
                             tuple(chosen.attack_names()), (progress,))
    emit_figures(figures, json_path)


def bench_race(
    images: Annotated[int, typer.Option(min=1, help="MNIST test images (the first N)")] = 20,
    starts: Annotated[str, typer.Option(help="start images, comma list: noise, class-mean")] = "noise,class-mean",
    contestants: Annotated[str, typer.Option(help="ours, invertinggradients, deepleakage")] =
        "ours,invertinggradients",
    wall_cap: Annotated[float, typer.Option(min=0.1, help="seconds per image at most, per contestant")] = 120.0,
    patience: Annotated[int, typer.Option(min=1, help="ours: L-BFGS evaluations without improvement")] = 30,
    breaching_patience: Annotated[int, typer.Option(min=1, help="breaching: iterations without improvement")] = 300,
    breaching_iterations: Annotated[int, typer.Option(min=1, help="breaching's schedule length")] = 4000,
    run_config: Annotated[list[str], typer.Option("--run-config", help="model key=value, e.g. channels=4")] = [],  # noqa: B006
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here (and the plot "
                                                                  "beside it, .png)")] = None,
) -> None:
    """Our Δθ inversion against breaching's from the same starts, each run to the end: PSNR/SSIM over time."""
    from fednas.data import resolve_data_root
    from simulations.race_breaching import CONTESTANTS, STARTS, RaceLimits, race

    names, kinds = parse_list(contestants), tuple(parse_list(starts))
    try:
        for name in names:
            CONTESTANTS.get(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not kinds or any(k not in STARTS for k in kinds):
        raise typer.BadParameter(f"--starts: unknown start in {starts!r}; known: {', '.join(STARTS)}")
    knobs = key_values(run_config, "--run-config")
    root, _ = resolve_data_root(data_root)
    limits = RaceLimits(wall_cap_s=wall_cap, patience=patience, breaching_patience=breaching_patience,
                        breaching_iterations=breaching_iterations)
    try:
        figures, png = race(images, str(root), knobs, names, kinds, limits)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_path is not None and png:
        atomic_write_bytes(json_path.with_suffix(".png"), png)
    emit_figures(figures, json_path)


def bench_similarity(
    per_class: Annotated[int, typer.Option(help="MNIST test images per class")] = 3,
    train_steps: Annotated[str, typer.Option(help="θ steps on public data before the update, comma list")] = "0,300",
    alpha_size: Annotated[str, typer.Option(help="α sizes, comma list (224 = shared default)")] = "224,896",
    activation: Annotated[str, typer.Option(help="activation")] = "elu",
    data_root: Annotated[str, typer.Option(help="data folder (default: $FEDNAS_DATA_ROOT)")] = "",
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """Cosine similarity of single-image Δα (and Δθ) within and across classes: how image-specific updates are."""
    from fednas.data import resolve_data_root
    from simulations.bench_similarity import similarity

    root, _ = resolve_data_root(data_root)
    emit_figures(similarity(str(root), per_class, parse_list(train_steps, int), parse_list(alpha_size, int),
                            activation), json_path)
