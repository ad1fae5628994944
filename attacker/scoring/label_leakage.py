"""Per-client label leakage: what an eavesdropper learns of each client's class balance from all its captures.

The estimate is the attacker's: the labels its attacks recovered from every capture of one client across rounds
(ADRA's labels, matched from Δα, estimate the client's D^α; the Δθ inversion's, recovered analytically from the
bias update, estimate its D^θ), counted, and shrunk towards the population's shares as a Dirichlet posterior
mean with as many pseudo-labels as classes (so that two labels do not claim a two-class client).

The truth is the scorer's: the labels of the client's D^α and D^θ in the run's partition (the evaluation-only
log names each node's partition). The score is the total-variation distance TV(p, q) = ½·Σ|p − q| between the
two, beside two baselines an attacker has without any capture: the uniform prior and the population's histogram
(public knowledge). An estimate below both baselines is leakage the partition's public shape does not explain;
under an IID partition the population baseline is already close, under a Dirichlet one it is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fednas.config import RunConfig
from fednas.evaluation_log import read_all_alpha_batches
from fednas.federation import federation_split

# which attack's recovered labels estimate which of the client's datasets
ESTIMATORS = {"alpha": "adra", "theta": "theta"}
KIND_LABEL = {"alpha": "D^α", "theta": "D^θ"}


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """½·Σ|p − q| of two histograms, each normalised to sum 1 (an empty one counts as uniform)."""
    def norm(h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, dtype=np.float64)
        return h / h.sum() if h.sum() > 0 else np.full(len(h), 1 / len(h))
    return float(0.5 * np.abs(norm(p) - norm(q)).sum())


def recovered_counts(lines: Sequence[Mapping[str, Any]], attack: str, num_classes: int) -> dict[int, np.ndarray]:
    """Per node: counts of the labels ``attack`` recovered from all of its captures (attacker side: no truth)."""
    out: dict[int, np.ndarray] = {}
    for line in lines:
        if line.get("attack", "adra") != attack or line.get("error"):
            continue
        counts = out.setdefault(int(line["node_id"]), np.zeros(num_classes, dtype=np.int64))
        for image in line.get("images", []):
            counts[int(image["label"])] += 1
    return out


def true_counts(run_dir: Path, cfg: RunConfig, dataset: str, root: Path, train_labels: np.ndarray,
                num_classes: int) -> dict[int, dict[str, Any]]:
    """Per node (as named by the evaluation-only log): its partition and the label counts of its D^α and D^θ."""
    records = read_all_alpha_batches(run_dir)
    if not records:
        return {}
    split = federation_split(cfg, dataset, root, int(records[0]["num_partitions"]))
    out: dict[int, dict[str, Any]] = {}
    for rec in records:
        client = split.clients[int(rec["partition_id"])]
        out[int(rec["node_id"])] = {
            "partition": int(rec["partition_id"]),
            "alpha": np.bincount(train_labels[client.alpha], minlength=num_classes),
            "theta": np.bincount(train_labels[client.theta], minlength=num_classes)}
    return out


def estimate(counts: np.ndarray, population: np.ndarray) -> np.ndarray:
    """The posterior mean of the class shares under a Dirichlet prior centred on the population's shares with
    as many pseudo-labels as classes: few recovered labels stay near the population, many speak for themselves."""
    prior = np.asarray(population, np.float64) / max(float(np.sum(population)), 1.0)
    strength = len(prior)
    return (counts + strength * prior) / (counts.sum() + strength)


def label_leakage(lines: Sequence[Mapping[str, Any]], truth: Mapping[int, Mapping[str, Any]],
                  population: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Rows (one per client and estimated dataset) and the mean TV per dataset, against both baselines."""
    uniform = np.ones(num_classes)
    rows = []
    for kind, attack in ESTIMATORS.items():
        for node, counts in sorted(recovered_counts(lines, attack, num_classes).items()):
            shares = estimate(counts, population)
            row: dict[str, Any] = {"node": node, "kind": kind, "attack": attack, "labels": int(counts.sum()),
                                   "counts": counts.tolist(), "estimate": shares.tolist()}
            if node in truth:
                true = np.asarray(truth[node][kind])
                row.update(partition=truth[node]["partition"], true=true.tolist(),
                           tv=total_variation(shares, true), tv_uniform=total_variation(uniform, true),
                           tv_population=total_variation(population, true))
            rows.append(row)
    means = {}
    for kind in ESTIMATORS:
        scored = [r for r in rows if r["kind"] == kind and "tv" in r]
        if scored:
            means[kind] = {key: float(np.mean([r[key] for r in scored]))
                           for key in ("tv", "tv_uniform", "tv_population")} | {"clients": len(scored)}
    return {"rows": rows, "mean": means, "population": np.asarray(population).tolist()}


def leakage_lines(leak: Mapping[str, Any]) -> list[str]:
    """The text report's lines: per dataset, the mean TV of the estimate against both baselines, then per client."""
    out = []
    for kind, m in leak.get("mean", {}).items():
        out.append(f"label histograms of {KIND_LABEL[kind]} ({m['clients']} client(s), from {ESTIMATORS[kind]}'s "
                   f"recovered labels): mean TV {m['tv']:.3f} (uniform prior {m['tv_uniform']:.3f}, population "
                   f"{m['tv_population']:.3f}; 0 = exact, lower is more leakage)")
    for r in leak.get("rows", []):
        if "tv" in r:
            out.append(f"  node {r['node']} (partition {r['partition']}) {KIND_LABEL[r['kind']]}: {r['labels']} "
                       f"labels, TV {r['tv']:.3f} (uniform {r['tv_uniform']:.3f}, population "
                       f"{r['tv_population']:.3f})")
    return out


def histogram_png(estimate: Sequence[int], true: Sequence[int], title: str) -> bytes:
    """A small bar chart: the estimated against the true class shares of one client."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est, tru = np.asarray(estimate, float), np.asarray(true, float)
    est, tru = est / max(est.sum(), 1), tru / max(tru.sum(), 1)
    x = np.arange(len(est))
    fig, ax = plt.subplots(figsize=(3.2, 1.9), dpi=100)
    ax.bar(x - 0.2, tru, 0.4, label="true", color="#888")
    ax.bar(x + 0.2, est, 0.4, label="estimated", color="#c33")
    ax.set_xticks(x)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
