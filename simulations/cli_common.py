"""What every ``archleak`` command shares: option parsing (lists, ``key=value``, TOML pairs), typed settings from
``--set`` with a one-line usage error, progress bars, and the JSON output of benchmarks."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

from fednas.schema import ConfigError, parse_config
from fednas.storage import atomic_write_json

ModelT = TypeVar("ModelT", bound=BaseModel)


def emit_figures(figures: dict[str, Any], json_path: Path | None) -> None:
    """Print benchmark figures as JSON, and write them atomically to ``json_path`` when given."""
    if json_path:
        atomic_write_json(json_path, figures)
    typer.echo(json.dumps(figures, indent=2))


def parse_list(value: str, kind: Callable[[str], Any] = str) -> list[Any]:
    """A comma list option (``"1,2,4"``) as values of ``kind``."""
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def key_values(items: list[str], option: str) -> dict[str, Any]:
    """``key=value`` options as a dict; values are JSON where they parse, else strings."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{option} expects key=value, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def toml_pairs(items: list[str]) -> dict[str, Any]:
    """``--run-config key=value`` options, each a TOML line (as ``flwr run --run-config`` takes them)."""
    out: dict[str, Any] = {}
    for item in items:
        try:
            out.update(tomllib.loads(item))
        except tomllib.TOMLDecodeError as exc:
            raise typer.BadParameter(f"--run-config expects key=value in TOML, got {item!r} ({exc})") from None
    return out


def settings_from(model: type[ModelT], base: dict[str, Any], overrides: list[str]) -> ModelT:
    """``model`` from the named options (``base``) plus ``--set key=value`` pairs; a bad value is a usage error."""
    try:
        return parse_config(model, {**base, **key_values(overrides, "--set")})
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def stage_bars() -> tuple[Callable[[str, int, int], None], dict[str, Any]]:
    """A progress callback ``(stage, done, total)`` that keeps one tqdm bar per stage, and the bars to close."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=False)
        bar.update(done - bar.n)

    return progress, bars
