"""AMIA outputs: ``amia.md`` and ``amia.csv`` (one row per member kind), ``roc.png`` (log-scale ROC),
``scores.npz`` (ids, memberships and scores per kind, for re-analysis) and ``amia.json`` (the resolved config,
seed, package versions, stage timings and every figure). All files are written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from attacker.membership.evaluate import AmiaResult
from attacker.membership.metrics import FEW_POSITIVES, roc
from fednas.run_folder import RunFolder
from fednas.search_space import spec_for_paper_p
from fednas.storage import atomic_write_bytes, atomic_write_json, csv_bytes, package_versions

# the paper's AMIA attack accuracy (DARTS, P = 64, η = 1), for the comparison column: shown only beside a run of
# that cell (the searched supernet of the P = 64 search space, η = 1, on that dataset)
PAPER_ACCURACY = {"mnist": 0.56, "cifar10": 0.67, "cifar10-subset": 0.67, "cifar100": 0.86}
PAPER_P, PAPER_ETA, SEARCHED = 64, 1.0, "supernet with final α"
COLUMNS = ("members", "n", "accuracy", "advantage", "precision", "recall", "f1", "auc", "auc_low", "auc_high",
           "tpr@1%fpr",
           "tpr@0.1%fpr", "tp@0.1%fpr", "best_accuracy", "target_acc_members", "target_acc_nonmembers",
           "paper_accuracy")
KIND_LABEL = {"alpha": "D^α (architecture data)", "alpha-used": "D^α used in α steps",
              "theta": "D^θ (weights' data, reference)"}


def paper_cell(result: AmiaResult) -> tuple[float | None, str]:
    """The paper's figure for this run's cell, or None and why not (a paper number is printed only beside the
    cell it belongs to)."""
    dataset = str(result.target.get("dataset"))
    number = PAPER_ACCURACY.get(dataset)
    if number is None:
        return None, f"the paper reports no AMIA accuracy for {dataset}"
    cell = f"the paper's {number} on {dataset} is for DARTS at P = {PAPER_P}, η = {PAPER_ETA:g}"
    if result.config.attack != "ml-leaks":
        return None, f"not shown: this is {result.config.attack}; {cell}, with its own attack (ml-leaks)"
    if result.target.get("model") != SEARCHED:
        return None, f"not shown: the target is the {result.target.get('model')}; {cell}"
    if result.config.eta != PAPER_ETA:
        return None, f"not shown: this run has η = {result.config.eta:g}; {cell}"
    try:
        knobs = RunFolder(result.run_dir).federation().knobs()
    except (OSError, ValueError) as exc:
        return None, f"not shown: the run's search space cannot be read ({exc}); {cell}"
    paper = spec_for_paper_p(PAPER_P)
    mine = (knobs["cells"], knobs["nodes"], knobs["alpha_sharing"])
    if mine != (paper.cells, paper.nodes, paper.alpha_sharing):
        return None, (f"not shown: this run searches {mine[0]} cells × {mine[1]} nodes ({mine[2]} α), the paper's "
                      f"P = {PAPER_P} maps to {paper.cells} × {paper.nodes} ({paper.alpha_sharing}); {cell}")
    return number, cell


def rows(result: AmiaResult) -> list[dict[str, Any]]:
    paper, _ = paper_cell(result)
    out = []
    for kind, m in result.metrics.items():
        acc = result.target_accuracy[kind]
        out.append({"members": kind, "n": m.n_members, "accuracy": m.accuracy, "advantage": m.advantage,
                    "precision": m.precision, "recall": m.recall, "f1": m.f1, "auc": m.auc,
                    "tpr@1%fpr": m.tpr_at_1pct_fpr, "tpr@0.1%fpr": m.tpr_at_01pct_fpr,
                    "tp@0.1%fpr": m.tp_at_01pct_fpr, "auc_low": m.auc_low, "auc_high": m.auc_high,
                    "best_accuracy": m.best_accuracy, "target_acc_members": acc["members"],
                    "target_acc_nonmembers": acc["nonmembers"], "paper_accuracy": paper if kind == "alpha" else None})
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def amia_markdown(result: AmiaResult) -> str:
    cfg = result.config
    lines = [f"# AMIA on {result.run_dir}", "",
             (f"Target: {result.target.get('model')} ({result.target.get('dataset')}, round "
             f"{result.target.get('round')}). Attack: {cfg.attack}"
             + (f" with {cfg.references} {cfg.shadow} reference model(s)" if cfg.attack != "ml-leaks"
                else f"; shadow: {cfg.shadows} × {cfg.shadow}; features {cfg.features}")
             + f"; η = {cfg.eta}; seed {cfg.seed}."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(result):
        row = {**row, "members": KIND_LABEL.get(row["members"], row["members"])}
        lines.append("| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |")
    lines += ["", ("accuracy is at the attack model's own threshold (0.5); advantage = 2·accuracy − 1 (the paper's "
              "Eq. 11); best_accuracy is at the best threshold, which a calibrated attacker could reach. "
              "Members and non-members are balanced, so chance is 0.5 accuracy and 0.5 AUC; TPR at FPR x is x "
              "for a random guess."), "",
              "Seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()), ""]
    few = [f"{r['members']}: TPR at 0.1% FPR rests on {r['tp@0.1%fpr']} true positive(s), too few to trust"
           for r in rows(result) if r["tp@0.1%fpr"] < FEW_POSITIVES]
    a = result.audit
    if a:
        lines += [(f"DP audit (D^α members, threshold chosen on one half, counted on the other: TP {a['tp']}, "
                   f"FN {a['fn']}, FP {a['fp']}, TN {a['tn']}): ε ≥ {a['epsilon_lower']:.3f} at "
                   f"{a['confidence']:.0%} confidence (δ = {a['delta']:.2g}); the accountant's ε = "
                   f"{a['accountant_epsilon']:.3f}."), ""]
    lines += [f"Note: {n}" for n in [*result.notes, *few, "paper_accuracy: " + paper_cell(result)[1]]]
    return "\n".join(lines) + "\n"


def log_roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """One log-log ROC plot of labelled (scores, members) pairs, with the chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    floor = 1e-4
    for label, (score, member) in curves.items():
        fpr, tpr, _ = roc(score, member)
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=label)
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1), xlabel="false positive rate",
           ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc_png(result: AmiaResult) -> bytes:
    curves = {f"{KIND_LABEL.get(kind, kind)}: AUC {result.metrics[kind].auc:.3f}": (score, member)
              for kind, (_, member, score) in result.scores.items()}
    return log_roc_png(curves, f"AMIA ROC ({result.config.attack}, {result.config.shadow}, η={result.config.eta})")


def write_report(result: AmiaResult, out: Path) -> dict[str, Any]:
    """Write every output under ``out``; return the JSON record."""
    out = Path(out)
    table = rows(result)
    atomic_write_bytes(out / "amia.csv", csv_bytes(table, COLUMNS))
    atomic_write_bytes(out / "amia.md", amia_markdown(result).encode())
    atomic_write_bytes(out / "roc.png", roc_png(result))
    arrays = {}
    for kind, (ids, member, score) in result.scores.items():
        key = kind.replace("-", "_")
        arrays.update({f"{key}_ids": ids, f"{key}_member": member, f"{key}_score": score})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out / "scores.npz", buf.getvalue())
    record = {"run_dir": result.run_dir, "config": result.config.model_dump(by_alias=True), "seed": result.config.seed,
              "target": result.target, "rows": table, "seconds": result.seconds, "shadow": result.shadow,
              "notes": result.notes, "audit": result.audit, "versions": package_versions()}
    atomic_write_json(out / "amia.json", record)
    return record


def comparison_rows(results: dict[str, AmiaResult]) -> list[dict[str, Any]]:
    """One row per member kind, one group of columns per attack (the same target, members and non-members)."""
    kinds = list(next(iter(results.values())).metrics)
    out = []
    for kind in kinds:
        row: dict[str, Any] = {"members": kind, "n": next(iter(results.values())).metrics[kind].n_members}
        for name, result in results.items():
            m = result.metrics[kind]
            row.update({f"{name}:{k}": v for k, v in (("auc", m.auc), ("auc_low", m.auc_low), ("auc_high", m.auc_high),
                                                       ("tpr@1%fpr", m.tpr_at_1pct_fpr),
                                                       ("tpr@0.1%fpr", m.tpr_at_01pct_fpr),
                                                       ("tp@0.1%fpr", m.tp_at_01pct_fpr), ("accuracy", m.accuracy))})
        out.append(row)
    return out


def comparison_markdown(results: dict[str, AmiaResult]) -> str:
    """The attacks side by side: AUC with its bootstrap interval, and TPR at 1% and 0.1% FPR with the count of true
    positives behind the latter; each attack's own full report is in its sub-folder."""
    first = next(iter(results.values()))
    names = list(results)
    lines = [f"# AMIA on {first.run_dir}: {len(names)} attacks", "",
             (f"Target: {first.target.get('model')} ({first.target.get('dataset')}, round "
              f"{first.target.get('round')}); η = {first.config.eta}; seed {first.config.seed}; the same members and "
              "non-members for every attack."),
             "", "| members | n | " + " | ".join(f"{a}: AUC [95% CI]" for a in names) + " |",
             "|---|---|" + "---|" * len(names)]
    table = comparison_rows(results)
    for row in table:
        cells = [f"{row[f'{a}:auc']:.3f} [{row[f'{a}:auc_low']:.3f}, {row[f'{a}:auc_high']:.3f}]" for a in names]
        lines.append(f"| {KIND_LABEL.get(row['members'], row['members'])} | {row['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| members | " + " | ".join(f"{a}: TPR@1% / TPR@0.1% (TP)" for a in names) + " |",
              "|---|" + "---|" * len(names)]
    for row in table:
        cells = [f"{row[f'{a}:tpr@1%fpr']:.3f} / {row[f'{a}:tpr@0.1%fpr']:.4f} ({row[f'{a}:tp@0.1%fpr']})"
                 for a in names]
        lines.append(f"| {KIND_LABEL.get(row['members'], row['members'])} | " + " | ".join(cells) + " |")
    few = [f"{a}, {row['members']}: TPR at 0.1% FPR rests on {row[f'{a}:tp@0.1%fpr']} true positive(s), too few "
           "to trust" for row in table for a in names if row[f"{a}:tp@0.1%fpr"] < FEW_POSITIVES]
    setups = [f"{a}: " + (f"{r.config.references} {r.config.shadow} reference model(s)" if r.config.attack != "ml-leaks"
                          else f"{r.config.shadows} × {r.config.shadow} shadow(s), features {r.config.features}")
              + "; seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items())
              for a, r in results.items()]
    lines += ["", *[f"- {s}" for s in setups], "", *[f"Note: {n}" for n in few],
              "Chance is 0.5 AUC, and TPR at FPR x is x for a random guess (balanced members and non-members)."]
    return "\n".join(lines) + "\n"


def write_comparison(results: dict[str, AmiaResult], out: Path) -> dict[str, Any]:
    """Each attack's full report in ``out/<attack>/``, and the side-by-side amia.md/.csv/.json and one roc.png with
    every attack's curves in ``out``."""
    out = Path(out)
    records = {name: write_report(result, out / name) for name, result in results.items()}
    table = comparison_rows(results)
    columns = ["members", "n", *[k for k in table[0] if ":" in k]]
    atomic_write_bytes(out / "amia.csv", csv_bytes(table, tuple(columns)))
    atomic_write_bytes(out / "amia.md", comparison_markdown(results).encode())
    curves = {f"{name}, {KIND_LABEL.get(kind, kind)}: AUC {result.metrics[kind].auc:.3f}": (score, member)
              for name, result in results.items() for kind, (_, member, score) in result.scores.items()}
    first = next(iter(results.values()))
    atomic_write_bytes(out / "roc.png", log_roc_png(curves, f"AMIA ROC, {len(results)} attacks (η={first.config.eta})"))
    record = {"run_dir": first.run_dir, "attacks": list(results), "rows": table, "seed": first.config.seed,
              "per_attack": {name: f"{name}/amia.json" for name in records}, "versions": package_versions()}
    atomic_write_json(out / "amia.json", record)
    return record
