"""What a reproduction writes from its finished cells: the table's Markdown (our value with its 95% interval,
the paper's number, the controls), its plot, and ``REPORT.md`` across tables. Every sentence below a table is
derived from the rows: a verdict compares the paper's number with our interval and nothing else."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attacker.scoring.stats import FEW
from fednas.storage import atomic_write_bytes
from simulations.bench_adra import PAPER_DEFINITIONS
from simulations.reproduce.scenario import Scenario, cell_id

WIDE = 0.2   # an interval wider than this decides nothing
CHANCE = {"adra": "the label-only baseline (the class mean of the recovered label) beside every rate",
          "amia": "chance is 0.5 for accuracy and AUC (balanced members and non-members)",
          "defense": "deltas are against defense=none of the same run"}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval(row: Mapping[str, Any], headline: Any) -> str:
    value = row.get(headline.key)
    if value is None:
        return "–"
    return f"{fmt(value)} [{fmt(row.get(headline.low))}, {fmt(row.get(headline.high))}]"


def _n(value: Any) -> str:
    return f" (n = {int(float(value)):,})"


def sample_size(row: Mapping[str, Any], headline: Any) -> str:
    """" (n = …)" for the headline rate, from the row keys the headline names; "" when the row lacks them."""
    parts = [row.get(k) for k in headline.n]
    if not parts or any(p is None or p == "" for p in parts):
        return ""
    return _n(sum(int(float(p)) for p in parts))


# Table 6: the paper reports changes; each (attack, our change, our value, its interval, the paper's change, n)
DEFENSE_PAIRS = (("AMIA", "d_amia_accuracy", "amia_accuracy", "amia_accuracy_lo", "amia_accuracy_hi",
                  "paper_d_accuracy", "amia_n"),
                 ("ADRA", "d_recognised", "recognised", "recognised_lo", "recognised_hi", "paper_d_sr", "adra_n"))


def _defense_pairs(row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Per attack the paper has a change for: (attack, our change with its interval and n and the paper's
    change, verdict). The interval is that of the defended value, shifted by the undefended value."""
    out = []
    for name, delta, value, lo, hi, paper, n in DEFENSE_PAIRS:
        if row.get(paper) is None or row.get(delta) is None or row.get(lo) is None:
            continue
        shift = row[value] - row[delta]
        low, high = row[lo] - shift, row[hi] - shift
        text = (f"ours Δ {fmt(row[delta])} [{fmt(low)}, {fmt(high)}]"
                f"{_n(row[n]) if row.get(n) not in (None, '') else ''}, paper Δ {fmt(row[paper])}")
        out.append((name, text, _compare(row[paper], low, high, False)))
    return out


def verdict(row: Mapping[str, Any], headline: Any, kind: str) -> str:
    """Where the paper's number falls against our 95% interval (table 6: per attack, on its change)."""
    if row.get("status") != "done":
        return str(row.get("status", "–"))
    if kind == "defense":
        return "; ".join(f"{name}: {v}" for name, _, v in _defense_pairs(row)) or "no paper number"
    number, low, high = row.get(headline.paper), row.get(headline.low), row.get(headline.high)
    if number is None or low is None or high is None:
        return "no paper number"
    return _compare(number, low, high, kind == "amia")


def _compare(paper: float, low: float, high: float, chance_applies: bool) -> str:
    if high - low > WIDE:
        return f"inconclusive (95% CI wider than {WIDE:g})"
    chance = "; chance also within it" if chance_applies and low <= 0.5 <= high else ""
    if low <= paper <= high:
        return f"reproduces (paper within our 95% CI{chance})"
    return ("ours above the paper" if low > paper else "ours below the paper") + chance


def table_markdown(scenario: Scenario, headline: Any, extra: Sequence[tuple[str, str]],
                   meta: Mapping[str, Any]) -> str:
    rows = meta["rows"]
    head = ["cell", headline.series, headline.label + " [95% CI]", "paper", "verdict",
            *[label for _, label in headline.controls], *[label for _, label in extra], "note"]
    lines = [f"# {scenario.table}: {scenario.title}", "",
             (f"Scale `{meta['scale']}`, seed {meta['seed']}, commit `{meta['commit'][:12]}`, {meta['machine']}; "
             f"{fmt(meta['seconds'], 0)} s of cells. Command: `{meta['command']}`."), "",
             f"The paper's numbers: {scenario.paper_metric}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["cell"], fmt(r.get(headline.series)), interval(r, headline), fmt(r.get(headline.paper)),
                 verdict(r, headline, scenario.kind), *[with_ci(r, k) for k, _ in headline.controls],
                 *[with_ci(r, k) for k, _ in extra], fmt(r.get("note")) if r.get("note") else ""]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", f"Controls: {CHANCE[scenario.kind]}."]
    if scenario.kind == "adra":
        lines += [f"- SR: {PAPER_DEFINITIONS['sr']}.", f"- MSE: {PAPER_DEFINITIONS['mse']}.",
                  ("- truth match: the gradient-match loss of the true images; when it is not below the attack's "
                  "own match, the objective cannot single out the truth.")]
    few = sorted({f"{r['cell']} ({r.get(headline.series)}: {r[headline.positives]})" for r in rows
                  if r.get("status") == "done" and r.get(headline.positives) is not None
                  and r[headline.positives] < FEW})
    if few:
        lines.append(f"- Rates from fewer than {FEW} positives (`{headline.positives}`), too few to trust: "
                     f"{', '.join(few)}.")
    return "\n".join(lines) + "\n"


def with_ci(row: Mapping[str, Any], key: str) -> str:
    """A value with its 95% interval when the row carries one (``key_lo``, ``key_hi``)."""
    if row.get(f"{key}_lo") is None or row.get(key) is None:
        return fmt(row.get(key))
    return f"{fmt(row[key])} [{fmt(row[f'{key}_lo'])}, {fmt(row[f'{key}_hi'])}]"


def plot_table(scenario: Scenario, headline: Any, rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The headline against the last axis, one line per (other knobs, series), paper numbers as open marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = list(scenario.axes)[-1]
    xs = [cell_id({axis: v}).split("=", 1)[1].lower() for v in scenario.axes[axis]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for r in rows:
        if r.get("status") != "done" or r.get(headline.key) is None:
            continue
        knobs = dict(part.split("=", 1) for part in r["cell"].split(" "))
        x = xs.index(knobs.pop(axis).lower())
        name = " ".join(f"{k}={v}" for k, v in knobs.items()) + f" {r.get(headline.series, '')}"
        series.setdefault(name.strip(), []).append((x, r))
    for name, points in series.items():
        px = [x for x, _ in points]
        py = [r[headline.key] for _, r in points]
        err = [[r[headline.key] - (r.get(headline.low) or r[headline.key]) for _, r in points],
               [(r.get(headline.high) or r[headline.key]) - r[headline.key] for _, r in points]]
        line = ax.errorbar(px, py, yerr=err, marker="o", capsize=3, label=name)
        paper = [(x, r[headline.paper]) for x, r in points if r.get(headline.paper) is not None]
        if paper and scenario.kind != "defense":
            ax.plot(*zip(*paper, strict=True), linestyle="--", marker="s", mfc="none",
                    color=line[0].get_color(), label=f"paper ({name})")
    ax.set_xticks(range(len(xs)), xs, rotation=30 if scenario.kind == "defense" else 0)
    ax.set_xlabel(axis)
    ax.set_ylabel(headline.label)
    ax.set_title(f"{scenario.table}: {scenario.title}", fontsize=9)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def report_markdown(tables: Sequence[tuple[Scenario, Any, Mapping[str, Any]]]) -> str:
    """REPORT.md: per table, the verdict of every row with a paper number, and the diagnostics behind them."""
    lines = ["# Reproduction report", "",
             ("Generated by `archleak reproduce all`; each section is derived from that table's rows (see its "
             "Markdown for every number with its interval)."), ""]
    for scenario, headline, meta in tables:
        rows = meta["rows"]
        lines += [f"## {scenario.table}: {scenario.title}", "",
                  (f"Scale `{meta['scale']}`, {fmt(meta['seconds'], 0)} s. Table: [{scenario.table}.md]"
                  f"({scenario.table}/{scenario.table}.md)."), ""]
        counts: dict[str, int] = {}
        for r in rows:
            v = verdict(r, headline, scenario.kind)
            counts[v] = counts.get(v, 0) + 1
        lines.append("Rows by verdict: " + "; ".join(f"{v}: {n}" for v, n in sorted(counts.items())) + ".")
        for r in rows:
            if r.get("status") != "done":
                continue
            pairs = _defense_pairs(r) if scenario.kind == "defense" else []
            if pairs:
                lines.append(f"- {r['cell']} ({r.get(headline.series)}): "
                             + "; ".join(f"{name}: {text}: {v}" for name, text, v in pairs) + ".")
            elif verdict(r, headline, scenario.kind) != "no paper number":
                lines.append(f"- {r['cell']} ({r.get(headline.series)}): ours {interval(r, headline)}"
                             f"{sample_size(r, headline)}, paper "
                             f"{fmt(r[headline.paper])}: {verdict(r, headline, scenario.kind)}.")
            elif r.get(headline.key) is not None:
                lines.append(f"- {r['cell']} ({r.get(headline.series)}): ours {interval(r, headline)}"
                             f"{sample_size(r, headline)}; no paper "
                             f"number at this cell{_chance(r, headline, scenario.kind)}.")
        lines += _diagnostics(scenario.kind, rows)
        lines += _not_measured(rows)
        lines.append("")
    return "\n".join(lines)


def _not_measured(rows: list[dict[str, Any]]) -> list[str]:
    """One line per reason a cell gave no number, naming the cells it holds for (in the table's order)."""
    cells: dict[str, list[str]] = {}
    for r in rows:
        if r.get("status") != "done" and r.get("note"):
            held = cells.setdefault(str(r["note"]), [])
            if r["cell"] not in held:
                held.append(str(r["cell"]))
    return [f"- Not measured ({', '.join(held)}): {reason}." for reason, held in cells.items()]


def _chance(row: Mapping[str, Any], headline: Any, kind: str) -> str:
    """For an AMIA accuracy: whether chance (0.5) lies within the row's interval."""
    low, high = row.get(headline.low), row.get(headline.high)
    if kind != "amia" or low is None or high is None:
        return ""
    return "; chance (0.5) within the interval" if low <= 0.5 <= high else "; chance (0.5) outside the interval"


def _diagnostics(kind: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    done = [r for r in rows if r.get("status") == "done"]
    out = []
    if kind == "adra":
        blind = [r for r in done if r.get("truth_match") is not None and r.get("attack_match") is not None
                 and r["truth_match"] >= r["attack_match"]]
        if blind:
            out.append(f"- Diagnostic: in {len(blind)} of {len(done)} attacked rows the true images match the "
                       "observed Δα no better than the reconstructions (truth_match ≥ attack_match): there the "
                       "objective cannot single out the truth, whatever the optimiser.")
        cos = {r["cell"]: (r["same_class_cosine"], r["different_class_cosine"]) for r in done
               if r.get("same_class_cosine") is not None}
        if cos:
            same, diff = (sum(v[i] for v in cos.values()) / len(cos) for i in (0, 1))
            out.append(f"- Diagnostic: captured single-image Δα of one class have a mean cosine of {same:.3f} "
                       f"(different classes {diff:.3f}) over {len(cos)} cell(s): the closer to 1, the more Δα "
                       "carries the label rather than the image.")
    if kind == "amia":
        gaps = [r["gap"] for r in done if r.get("gap") is not None]
        if gaps:
            out.append(f"- Diagnostic: the targets' train–test gap (D^θ members against non-members) spans "
                       f"{min(gaps):.3f} to {max(gaps):.3f}; the paper's Figure 3 ties AMIA to that gap.")
    return out
