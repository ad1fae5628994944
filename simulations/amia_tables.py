"""AMIA scenarios for the paper's Tables 3–5, and the AMIA benchmark.

  table3  network scale: one federated search per P ∈ {32, 64, 128, 256} (α count ≈ P²/2, per-cell α), each
          attacked with the fixed shadow (the paper's Table 3)
  table4  the improved AMIA of the paper's §4.3 on one run: fixed ResNet shadow against the searchable shadow
          (the paper's Table 4 compares NAS paradigms; this project searches with DARTS only, so its table
          compares the shadow kinds, which is what §4.3 measures)
  table5  η ∈ {1, 0.75, 0.5, 0.25}: a share 1 − η of the attacker's data from another dataset (Table 5)

Each writes ``<name>.md``, ``<name>.csv`` and ``<name>.json`` (configs, seeds, versions) with the attack's
accuracy, F1, AUC and TPR at low FPR on D^α members, the D^θ AUC as the weight-level reference, and the paper's
figure where it has one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attacker.membership.amia import AmiaConfig
from attacker.membership.evaluate import AmiaResult, evaluate_run
from attacker.membership.report import fmt, write_report
from fednas.registry import Registry
from fednas.search_space import spec_for_paper_p
from fednas.storage import atomic_write_bytes, atomic_write_json, csv_bytes, package_versions
from simulations.targets import load_target

PAPER = {  # the paper's attack accuracy on MNIST, CIFAR-10, CIFAR-100 (DARTS)
    "table3": {"P=32": (0.56, 0.63, 0.83), "P=64": (0.56, 0.67, 0.86), "P=128": (0.57, 0.69, 0.89),
               "P=256": (0.57, 0.70, 0.91)},
    "table5": {"η=1": (0.56, 0.62, 0.86), "η=0.75": (0.55, 0.61, 0.83), "η=0.5": (0.55, 0.58, 0.81),
               "η=0.25": (0.54, 0.56, 0.75)},
}
DATASET_COLUMN = {"mnist": 0, "cifar10": 1, "cifar10-subset": 1, "cifar100": 2}


@dataclass(frozen=True)
class Column:
    label: str
    run: Mapping[str, Any] = field(default_factory=dict)   # run-config overrides (a new search when not empty)
    amia: Mapping[str, Any] = field(default_factory=dict)  # AMIA config overrides


def _scale(p: int) -> Column:
    spec = spec_for_paper_p(p)
    return Column(f"P={p}", {"cells": spec.cells, "nodes": spec.nodes, "alpha-sharing": "per-cell"})


SCENARIOS: Registry[tuple[Column, ...]] = Registry("AMIA scenario")
SCENARIOS.add("table3", tuple(_scale(p) for p in (32, 64, 128, 256)))
SCENARIOS.add("table4", (Column("fixed shadow", amia={"shadow": "fixed"}),
                         Column("searchable shadow", amia={"shadow": "searchable"})))
SCENARIOS.add("table5", tuple(Column(f"η={e:g}", amia={"eta": e}) for e in (1.0, 0.75, 0.5, 0.25)))
TABLE = ("scenario", "column", "dataset", "accuracy", "f1", "auc", "tpr@1%fpr", "tpr@0.1%fpr", "advantage",
         "theta_auc", "paper_accuracy", "seconds")


def _row(name: str, column: Column, result: AmiaResult, seconds: float) -> dict[str, Any]:
    dataset = str(result.target.get("dataset"))
    m, theta = result.metrics["alpha"], result.metrics.get("theta")
    paper = PAPER.get(name, {}).get(column.label)
    index = DATASET_COLUMN.get(dataset)
    return {"scenario": name, "column": column.label, "dataset": dataset, "accuracy": m.accuracy, "f1": m.f1,
            "auc": m.auc, "tpr@1%fpr": m.tpr_at_1pct_fpr, "tpr@0.1%fpr": m.tpr_at_01pct_fpr,
            "advantage": m.advantage, "theta_auc": theta.auc if theta else None,
            "paper_accuracy": paper[index] if paper and index is not None else None, "seconds": seconds}


def run_scenario(name: str, out: Path, *, run_dir: Path | None, base_run: Mapping[str, Any], amia: AmiaConfig,
                 clients: int = 2, data_root: str = "", only: tuple[str, ...] = (),
                 progress: Callable[[str, int, int], None] = lambda *a: None,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every column of a scenario; write the table and return its rows."""
    from simulations.simulate import simulate

    columns = [c for c in SCENARIOS.get(name) if not only or c.label in only]
    rows, records = [], []
    for column in columns:
        tick = time.perf_counter()
        target = run_dir
        if column.run or target is None:
            config = {**base_run, **column.run, "interceptor": "off", "output-dir": str(out / "runs")}
            log(f"archleak: {name} {column.label}: federated search ({clients} clients)")
            target = simulate(config, num_clients=clients)
        cfg = amia.model_copy(update={k.replace("-", "_"): v for k, v in column.amia.items()})
        cfg = AmiaConfig.model_validate(cfg.model_dump())
        log(f"archleak: {name} {column.label}: AMIA ({cfg.shadow} shadow, η={cfg.eta:g})")
        box = load_target(target, torch.device(cfg.device), data_root)
        result = evaluate_run(target, cfg, box, data_root=data_root, progress=progress, log=log)
        folder = out / column.label.replace("=", "").replace(" ", "-").replace("η", "eta")
        records.append({"column": column.label, "run_dir": str(target), **write_report(result, folder)})
        rows.append(_row(name, column, result, time.perf_counter() - tick))
    write_table(name, rows, records, out)
    return rows


def write_table(name: str, rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], out: Path) -> None:
    atomic_write_bytes(out / f"{name}.csv", csv_bytes(rows, TABLE))
    lines = [f"# AMIA {name}", "", "| " + " | ".join(TABLE) + " |", "|" + "---|" * len(TABLE)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in TABLE) + " |" for r in rows]
    lines += ["", ("Members: every D^α sample of the participating clients; non-members: the held-back population. "
              "theta_auc: the same attack against D^θ members (weight-level reference). paper_accuracy: the "
              "paper's attack accuracy for the same dataset and setting.")]
    atomic_write_bytes(out / f"{name}.md", ("\n".join(lines) + "\n").encode())
    atomic_write_json(out / f"{name}.json", {"scenario": name, "rows": list(rows), "cases": list(records),
                                             "versions": package_versions()})


def bench_cases(run_dir: Path, cases: Sequence[AmiaConfig], data_root: str = "") -> dict[str, Any]:
    """Per-stage wall time and attack quality for each AMIA config on one run (JSON figures)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    rounds = [json.loads(line) for line in (Path(run_dir) / "rounds.jsonl").read_text().splitlines() if line]
    figures: dict[str, Any] = {"run_dir": str(run_dir), "dataset": None,
                               "target_training_s": sum(r["seconds"] for r in rounds),
                               "target_test_accuracy": summary.get("final_test_accuracy"), "cases": [],
                               "versions": package_versions()}
    for cfg in cases:
        result = evaluate_run(run_dir, cfg, load_target(run_dir, torch.device(cfg.device), data_root),
                              data_root=data_root, log=lambda line: None)
        figures["dataset"] = result.target.get("dataset")
        figures["cases"].append({
            "shadow": cfg.shadow, "eta": cfg.eta, "config": cfg.model_dump(by_alias=True),
            "seconds": result.seconds, "shadow_train_accuracy": result.shadow["train_accuracy"],
            **{kind: m.as_dict() | {"target_accuracy": result.target_accuracy[kind]}
               for kind, m in result.metrics.items()}})
    return figures
