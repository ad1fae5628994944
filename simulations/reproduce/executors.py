"""What runs a scenario's cells, by the scenario's ``kind``: one registry entry per kind, carrying its settings
model, why a cell cannot run here, its cost probe, the cell itself, the CSV columns and the headline metric the
Markdown, the plot and REPORT.md show beside the paper's number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fednas.registry import Registry
from simulations.reproduce import adra, amia, defense
from simulations.reproduce.scenario import Cell, Strict

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Context:
    data_root: str
    seed: int
    folder: Path
    scale: str
    log: Callable[[str], None] = print
    budget_s: float = float("inf")


@dataclass(frozen=True)
class Headline:
    """The number a table is about: its key, interval keys, the paper's key, and how the row is labelled."""

    key: str
    low: str
    high: str
    paper: str
    label: str
    series: str                    # the row key that tells series apart (variant, attack, defense)
    controls: tuple[tuple[str, str], ...] = ()   # (row key, label) printed beside the headline
    positives: str = ""            # the row key counting the positives behind the table's smallest rate
    n: tuple[str, ...] = ()        # the row keys whose sum is the headline rate's sample size


@dataclass(frozen=True)
class Executor:
    settings: type[Strict]
    skip: Callable[[Cell, Any, Context], str | None]
    probe: Callable[[Cell, Any, Context], dict[str, Any]]   # {"estimated_s": ..., "bound": measured | lower}
    run_cell: Callable[[Cell, Any, Context, Progress], dict[str, Any]]
    columns: tuple[str, ...]
    headline: Headline
    extra: tuple[tuple[str, str], ...] = field(default=())   # (row key, label) of more Markdown columns
    # the cost order of the cells, where there is one: no cell of a higher tier costs less than one of a lower
    tier: Callable[[Cell], float] | None = None


def by_p(cell: Cell) -> float:
    """ADRA and AMIA cells cost more with the network size P, whatever their other knobs."""
    return float(cell.knobs.get("p", 0))


EXECUTORS: Registry[Executor] = Registry("scenario kind")
EXECUTORS.add("adra", Executor(
    adra.AdraSettings,
    lambda cell, s, ctx: adra.not_run_reason(cell, s),
    lambda cell, s, ctx: adra.probe(cell, s, ctx.data_root, ctx.seed, ctx.budget_s),
    lambda cell, s, ctx, progress: adra.run_cell(cell, s, ctx.data_root, ctx.seed, progress),
    adra.COLUMNS,
    Headline("recognised", "recognised_lo", "recognised_hi", "paper_sr", "recognised (oracle; paper: SR by eye)",
             "variant", (("baseline_recognised", "label-only"), ("identified", "identified"),
                         ("psnr", "PSNR dB"), ("ssim", "SSIM")), "recognised_k", ("n",)),
    (("n", "n"), ("weights_test_accuracy", "weights' test acc"), ("truth_match", "truth match"),
     ("attack_match", "attack match")), by_p))
EXECUTORS.add("amia", Executor(
    amia.AmiaSettings,
    lambda cell, s, ctx: amia.skip(cell, s, ctx.data_root),
    lambda cell, s, ctx: {"estimated_s": amia.probe(cell, s, ctx.seed, ctx.data_root), "bound": "rough"},
    lambda cell, s, ctx, progress: amia.run_cell(cell, s, ctx.seed, ctx.data_root, progress, ctx.log),
    amia.COLUMNS,
    Headline("accuracy", "accuracy_lo", "accuracy_hi", "paper_accuracy", "attack accuracy", "attack",
             (("f1", "F1"), ("paper_f1", "paper F1"), ("auc", "AUC"), ("theta_auc", "D^θ AUC")), "tp@0.1%fpr",
             ("n_members", "n_nonmembers")),
    (("n_members", "members"), ("tpr@1%fpr", "TPR@1%"), ("tpr@0.1%fpr", "TPR@0.1%"), ("tp@0.1%fpr", "TP@0.1%"),
     ("target_theta_accuracy", "train acc (D^θ)"), ("target_nonmember_accuracy", "non-member acc"),
     ("gap", "gap")), by_p))
EXECUTORS.add("defense", Executor(
    defense.DefenseSettings,
    lambda cell, s, ctx: defense.skip(cell),
    lambda cell, s, ctx: defense.probe(cell, s, ctx.seed, ctx.data_root),
    lambda cell, s, ctx, progress: defense.run_cell(cell, s, ctx.seed, ctx.data_root, ctx.folder, progress,
                                                     ctx.log),
    defense.COLUMNS,
    Headline("amia_accuracy", "amia_accuracy_lo", "amia_accuracy_hi", "paper_d_accuracy",
             "AMIA accuracy (paper: its Δ)", "defense",
             (("d_amia_accuracy", "Δ AMIA acc"), ("recognised", "ADRA recognised"),
              ("d_recognised", "Δ ADRA recognised"), ("paper_d_sr", "paper Δ SR")), "recognised_k", ("amia_n",)),
    (("adra_n", "ADRA n"), ("amia_auc", "AMIA AUC"), ("theta_auc", "D^θ AUC"), ("test_accuracy", "test acc"),
     ("d_test_accuracy", "Δ test acc"), ("epsilon", "ε (accountant)"),
     ("audit_epsilon_lower", "ε lower bound (audit)"))))
