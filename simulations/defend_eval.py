"""``archleak defend-eval``: the same seeded federation with each defense and without, then attacked.

Every case runs through Flower's simulation engine with the eavesdropper's tap (``interceptor = after-run``), so
the attack sees exactly what crossed the wire. The table gives absolute values and deltas against no defense:
ADRA success under each criterion, PSNR/SSIM, label accuracy (what it stops); the global model's test accuracy
and the wall time (what it costs); ε where DP-SGD is accounted. Output: ``defenses.md``, ``defenses.csv``,
``privacy-utility.png`` and ``defend-eval.json`` (the resolved configs, seed and package versions).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fednas.storage import atomic_write_bytes, atomic_write_json, csv_bytes, package_versions

# (label, run-config overrides): the paper's Table 6 columns that apply to ADRA, and stronger settings
CASES: dict[str, dict[str, Any]] = {
    "none": {},
    "dp-sgd-alpha-paper": {"defenses": "dp-sgd-alpha-paper"},
    "dp-sgd-alpha σ=1": {"defenses": "dp-sgd-alpha", "dp-noise-multiplier": 1.0, "dp-clip": 1.0},
    "l2-alpha λ=0.01": {"defenses": "l2-alpha", "l2-alpha-weight": 0.01},
    "input-noise s=0.1": {"defenses": "input-noise", "input-noise-std": 0.1},
    "local-dp-update ε=8": {"defenses": "local-dp-update", "update-clip": 1.0, "ldp-epsilon": 8.0},
    "central-dp σ=1": {"defenses": "central-dp", "update-clip": 1.0, "central-noise-multiplier": 1.0},
    "md (DMP student)": {},
}
# cases applied after training to the undefended run (the same federation): the served model changes
POST_TRAINING = {"md (DMP student)": "student"}
AMIA_KEYS = ("amia_accuracy", "amia_auc", "amia_tpr1", "amia_theta_auc")
COLUMNS = ("defense", "test_accuracy", "d_test_accuracy", "recognised", "d_recognised", "identified",
           "d_identified", "label", "d_label", "psnr", "d_psnr", "ssim", "d_ssim", "amia_accuracy", "d_amia_accuracy",
           "amia_auc", "d_amia_auc", "amia_tpr1", "amia_theta_auc", "epsilon", "wall_s", "wall_ratio")


def run_case(label: str, overrides: Mapping[str, Any], base: Mapping[str, Any], clients: int,
             out: Path) -> dict[str, Any]:
    from simulations.simulate import simulate

    config = {**base, **overrides, "interceptor": "after-run", "output-dir": str(out / "runs")}
    start = time.perf_counter()
    run_dir = simulate(config, num_clients=clients)
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    threat = json.loads((run_dir / "config.json").read_text())["config"]["threat-model"]
    adra = json.loads((run_dir / "reconstructions" / threat / "summary.json").read_text())
    return {"defense": label, "run_dir": str(run_dir), "config": config, "wall_s": wall,
            "test_accuracy": summary.get("final_test_accuracy"),
            "epsilon": (summary.get("privacy") or {}).get("max_epsilon"),
            "attack": adra.get("attack", {}), "baseline": adra.get("baseline", {}), "chance": adra.get("chance")}


def table_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Absolute values and deltas against the first (undefended) case."""
    ref = results[0]
    rows = []
    for r in results:
        row: dict[str, Any] = {"defense": r["defense"], "test_accuracy": r["test_accuracy"],
                               "epsilon": r["epsilon"], "wall_s": r["wall_s"],
                               "wall_ratio": r["wall_s"] / ref["wall_s"]}
        row["d_test_accuracy"] = _delta(r["test_accuracy"], ref["test_accuracy"])
        for k in ("recognised", "identified", "label", "psnr", "ssim"):
            row[k] = r["attack"].get(k)
            row[f"d_{k}"] = _delta(row[k], ref["attack"].get(k))
        for k in AMIA_KEYS:
            row[k] = r.get("amia", {}).get(k)
        for k in ("amia_accuracy", "amia_auc"):
            row[f"d_{k}"] = _delta(row[k], ref.get("amia", {}).get(k))
        rows.append(row)
    return rows


def _delta(value: float | None, ref: float | None) -> float | None:
    return None if value is None or ref is None else value - ref


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "∞" if value == float("inf") else f"{value:.3f}"
    return str(value)


def defense_markdown(rows: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
                     amia: Mapping[str, Any] | None = None) -> str:
    head = ("| defense | test acc (Δ) | ADRA recognised (Δ) | identified (Δ) | label (Δ) | PSNR (Δ) | SSIM (Δ) "
            "| AMIA acc (Δ) | AMIA AUC (Δ) | TPR@1%FPR | D^θ AUC | ε | wall s (×) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        pair = [f"{_fmt(r[k])} ({_signed(r['d_' + k])})" for k in
                ("test_accuracy", "recognised", "identified", "label", "psnr", "ssim", "amia_accuracy", "amia_auc")]
        lines.append(f"| {r['defense']} | " + " | ".join(pair)
                     + f" | {_fmt(r['amia_tpr1'])} | {_fmt(r['amia_theta_auc'])} | {_fmt(r['epsilon'])} "
                     f"| {r['wall_s']:.1f} ({r['wall_ratio']:.2f}×) |")
    base = results[0]["baseline"]
    lines.append(f"\nLabel-only baseline (undefended run): recognised {_fmt(base.get('recognised'))}, "
                 f"identified {_fmt(base.get('identified'))}, SSIM {_fmt(base.get('ssim'))}; chance: "
                 f"{results[0]['chance']}.")
    if amia is not None:
        attack = amia.get("attack", "ml-leaks")
        how = (f"{amia.get('references', 4)} {amia.get('shadow', 'fixed')} reference models" if attack != "ml-leaks"
               else f"{amia.get('shadows', 1)} {amia.get('shadow', 'fixed')} shadow(s)")
        lines.append(f"AMIA ({attack}, {how}): members are D^α of every client, non-members the held-back "
                     "population; D^θ AUC is the same attack against the weights' data. MD attacks the DMP student "
                     "of the undefended run; its ADRA columns are those of that run (distillation happens after "
                     "training).")
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in name).strip("-")


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        if r["ssim"] is None or r["test_accuracy"] is None:
            continue
        ax.scatter(r["ssim"], r["test_accuracy"], s=40)
        ax.annotate(r["defense"], (r["ssim"], r["test_accuracy"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("ADRA reconstruction SSIM (lower: more private)")
    ax.set_ylabel("global model test accuracy (utility)")
    ax.set_title("privacy against utility, per defense")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def post_training_case(label: str, reference: Mapping[str, Any], distill_settings: Mapping[str, Any]
                       ) -> dict[str, Any]:
    """MD: distil the undefended run's model (on the run's device); the served model is the student, the wire
    is unchanged."""
    from app.config import parse_app
    from defenses.distill_run import distill_run
    from defenses.distillation import DistillConfig
    from fednas.federation import resolve_device

    device = resolve_device(parse_app(reference["config"]).federation.device)
    record = distill_run(Path(reference["run_dir"]), DistillConfig.model_validate(dict(distill_settings)), device)
    return {**reference, "defense": label, "model": POST_TRAINING[label], "wall_s": reference["wall_s"]
            + record["seconds"], "test_accuracy": record["student_test_accuracy"], "distill": record}


def amia_figures(result: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """AMIA (fixed shadow) against the case's served model: D^α members, and D^θ as the reference."""
    import torch

    from attacker.membership.amia import AmiaConfig
    from attacker.membership.evaluate import evaluate_run
    from simulations.targets import load_target

    cfg = AmiaConfig.model_validate(dict(settings))
    run_dir = Path(result["run_dir"])
    target = load_target(run_dir, torch.device(cfg.device), model=result.get("model", "global"))
    amia = evaluate_run(run_dir, cfg, target, kinds=("alpha", "theta"), log=lambda line: None)
    alpha, theta = amia.metrics["alpha"], amia.metrics["theta"]
    return {"amia_accuracy": alpha.accuracy, "amia_auc": alpha.auc, "amia_tpr1": alpha.tpr_at_1pct_fpr,
            "amia_theta_auc": theta.auc, "seconds": amia.seconds}


def defend_eval(base: Mapping[str, Any], cases: Mapping[str, Mapping[str, Any]], clients: int,
                out: Path, amia: Mapping[str, Any] | None = None,
                distill: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every case, attacked by ADRA (from the wire) and, unless ``amia`` is None, by AMIA (settings)."""
    if "none" not in cases:
        raise ValueError("the cases must include 'none' (the reference for every delta)")
    order = ["none", *[c for c in cases if c != "none"]]
    results = []
    for name in order:
        if name in POST_TRAINING:
            results.append(post_training_case(name, results[0], distill or {}))
        else:
            results.append(run_case(name, cases[name], base, clients, out / _slug(name)))
        if amia is not None:
            results[-1]["amia"] = amia_figures(results[-1], amia)
    rows = table_rows(results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "defenses.md", defense_markdown(rows, results, amia).encode())
    atomic_write_bytes(out / "defenses.csv", csv_bytes(rows, COLUMNS))
    plot(rows, out / "privacy-utility.png")
    report = {"rows": rows, "results": results, "clients": clients, "seed": base.get("seed", 0),
              "amia": dict(amia) if amia is not None else None, "distill": dict(distill or {}),
              "versions": package_versions()}
    atomic_write_json(out / "defend-eval.json", report)
    return report
