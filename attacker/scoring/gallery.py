"""What the interceptor leaves behind: PNG grids, metrics.jsonl and a self-contained index.html.

``reconstructions/<threat-model>/``:
  r0001-n<node>-<attack>.png   rows: reconstruction, ground truth (when the evaluation log has it),
                      label-only baseline
  metrics.jsonl       one line per (capture, attack): per-image metrics, seconds, or why it did not apply
  index.html          a gallery readable from disk (no server), rewritten atomically after every batch
  summary.json        success rates under each criterion, baseline and chance
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fednas.storage import atomic_write_bytes, atomic_write_json, read_jsonl

SCALE = 4
ROW_LABELS = {3: ("reconstruction", "truth", "label only"), 2: ("reconstruction", "label only")}
LABEL_WIDTH = 104   # pixels, at the final size


def grid_png(rows: Sequence[torch.Tensor], scale: int = SCALE, pad: int = 2,
             labels: Sequence[str] | None = None) -> bytes:
    """PNG of image rows ([n, C, H, W] each, values in [0, 1]), each row named on its left (``labels``; by
    default: reconstruction, truth, label only); missing cells stay grey."""
    from PIL import ImageDraw, ImageFont

    names = list(labels) if labels is not None else list(ROW_LABELS.get(len(rows), [""] * len(rows)))
    n = max(len(r) for r in rows)
    c, h, w = rows[0].shape[1:]
    canvas = np.full(((h + pad) * len(rows) + pad, (w + pad) * n + pad, 3), 0.5, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            arr = img.detach().cpu().float().clamp(0, 1).numpy().transpose(1, 2, 0)
            arr = np.repeat(arr, 3, axis=2) if c == 1 else arr
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = arr
    grid = Image.fromarray((canvas * 255).round().astype(np.uint8))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    page = Image.new("RGB", (grid.width + LABEL_WIDTH, grid.height), "white")
    page.paste(grid, (LABEL_WIDTH, 0))
    draw, font = ImageDraw.Draw(page), ImageFont.load_default(size=13)
    for i, name in enumerate(names):
        y = (pad + i * (h + pad) + h // 2) * scale - 7
        draw.text((4, y), name, fill="black", font=font)
    buf = io.BytesIO()
    page.save(buf, format="PNG")
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


CRITERIA_ROWS = ("recognised", "identified", "ssim>=0.5", "label", "psnr", "ssim", "mse")
PRESET_NOTE = ("attack preset: {} (the paper's ADRA as written; the paper's SR counts reconstructions that 'converge "
               "to a recognisable one', judged by eye, and its MSE scale is not stated: compare rates, not MSE values)")
ATTACK_TITLES = {"adra": "ADRA (Δα)", "theta": "Δθ inversion", "joint": "joint (Δα + Δθ)"}


def _cell(values: Mapping[str, Any], intervals: Mapping[str, Any], key: str) -> str:
    value, ci = values.get(key, ""), intervals.get(key)
    if value == "" or not ci:
        return _fmt(value)
    if "k" in ci:
        return f"{_fmt(value)} ({ci['k']}/{ci['n']}; {ci['low']:.2f}–{ci['high']:.2f})"
    return _fmt(value) if math.isnan(ci["low"]) else f"{_fmt(value)} ({ci['low']:.2f}–{ci['high']:.2f})"


def summary_table(summary: Mapping[str, Any]) -> list[list[str]]:
    """Rows: criterion, then per attack its value and its label-only baseline (each with k/n and a 95% interval),
    then chance."""
    per = summary.get("by_attack") or {"adra": summary}
    chance = summary.get("chance", {})
    rows = [["criterion"] + [c for n in per for c in (n, f"{n}: label-only")] + ["chance"]]
    if "wire" in summary:
        wire = summary["wire"]
        rows.append(["exchanges seen (with a client update)", f"{wire['exchanges']} ({wire['with_update']})"]
                    + [""] * (2 * len(per) - 1) + [""])
    rows.append(["captures attacked (not applicable, failed)"]
                + [c for s in per.values()
                   for c in (f"{s.get('captures', 0)} ({s.get('not_applicable', 0)}, {s.get('failed', 0)})", "")]
                + [""])
    for key in CRITERIA_ROWS:
        if any(key in s.get("attack", {}) or key in s.get("baseline", {}) for s in per.values()):
            rows.append([f"SR ({key})" if key in ("recognised", "identified", "ssim>=0.5") else key]
                        + [_cell(s.get(side, {}), s.get("intervals", {}).get(side, {}), key)
                           for s in per.values() for side in ("attack", "baseline")]
                        + [_fmt(chance.get(key, "–"))])
    return rows


def headline(summary: Mapping[str, Any]) -> str:
    """One sentence, computed from the numbers: what the eavesdropper got, against the label alone."""
    per = summary.get("by_attack") or {}
    log = summary.get("evaluation_log") or {"present": True}
    attacked = sum(s.get("captures", 0) for s in per.values())
    if not attacked:
        return "No capture has been attacked yet."
    parts = []
    for name, s in per.items():
        ci = s.get("intervals", {})
        hit, base = ci.get("attack", {}).get("identified"), ci.get("baseline", {}).get("identified")
        if hit and base:
            few = " (fewer than 10: too few to rank)" if hit["k"] < 10 else ""
            parts.append(f"{ATTACK_TITLES.get(name, name)} identified {hit['k']} of {hit['n']} images beyond their "
                         f"label{few}; the label alone identifies {base['k']}")
    if not parts:
        where = "" if log["present"] else f": not scored, no evaluation log at {log['path']}"
        return f"{attacked} capture-attack pair(s) recorded{where}."
    leak = (summary.get("label_leakage") or {}).get("mean", {}).get("alpha")
    tail = (f" Per-client label histograms of D^α: TV {leak['tv']:.2f} from the captures, against "
            f"{leak['tv_population']:.2f} from the population alone." if leak else "")
    return "; ".join(parts) + "." + tail


def skip_notes(summary: Mapping[str, Any]) -> list[str]:
    """Run-wide notices, once: scoring without a log, why an attack did not apply (for instance: no θ on the wire
    when share-weights = false), and how many captures failed (errors in metrics.jsonl and interceptor.log; a
    rerun tries them again)."""
    per = (summary.get("by_attack") or {}).items()
    log = summary.get("evaluation_log") or {"present": True}
    unscored = [] if log["present"] else [(f"not scored: no evaluation log at {log['path']} (rates are "
                                           "label-only; name the federation's run folder with --evaluation-dir)")]
    preset = [] if summary.get("preset", "none") == "none" else [PRESET_NOTE.format(summary["preset"])]
    method = summary.get("search_method") or {}
    methods = [] if not method else [
        f"search method {method['name']} ({method['paper']}): D^α reaches the wire as {method['d_alpha']}",
        *(f"  {name}: {why}" for name, why in method["attacks"].items())]
    return methods + preset + unscored + (
        [f"{name}: not applicable to {s['not_applicable']} capture(s): {s.get('why_not', '')}"
         for name, s in per if s.get("not_applicable")]
        + [f"{name}: FAILED on {s['failed']} capture(s): {s.get('why_failed', '')}" for name, s in per
           if s.get("failed")])


def _card(records: Sequence[Mapping[str, Any]]) -> str:
    first, parts = records[0], []
    for rec in records:
        if rec.get("not_applicable"):
            continue                          # said once, above the captures
        imgs = rec.get("images", [])
        lines = "".join(
            f"<li>#{i}: label {m.get('label')}"
            + (f" (true {m['true_label']}), PSNR {_fmt(m.get('psnr', ''))}, SSIM {_fmt(m.get('ssim', ''))}, "
               f"recognised {_fmt(m.get('recognised', ''))}, identified {_fmt(m.get('identified', ''))}"
               if "true_label" in m else "") + "</li>" for i, m in enumerate(imgs))
        error = (rec.get("error") or "").splitlines()
        cost = (f"<p>match loss {_fmt(rec['match_loss'])}, {_fmt(rec['seconds_per_image'])} s/image</p>"
                if "match_loss" in rec else "")
        parts.append(
            f"<div class='att'><h4>{html.escape(ATTACK_TITLES.get(rec.get('attack', 'adra'), rec.get('attack')))}</h4>"
            + (f"<img src='{html.escape(rec['png'])}' alt='rows: reconstruction, truth, label only'>"
               if rec.get("png") else "")
            + (f"<p class='err'>failed: {html.escape(error[0])}</p>" if error else "")
            + f"<ul>{lines}</ul>{cost}</div>")
    if not parts:
        return ""
    return (f"<div class='card'><h3>round {first['server_round']} · node {first['node_id']}</h3>"
            + "".join(parts) + "</div>")


def _histograms(folder: Path, leak: Mapping[str, Any]) -> str:
    """One small bar chart per client and dataset (estimated against true), written beside the page."""
    from attacker.scoring.label_leakage import KIND_LABEL, histogram_png, leakage_lines

    figures = []
    for r in leak.get("rows", []):
        if "true" not in r:
            continue
        name = f"labels-n{r['node']}-{r['kind']}.png"
        title = f"node …{str(r['node'])[-4:]} {KIND_LABEL[r['kind']]}: TV {r['tv']:.2f}"
        alt = (f"node {r['node']} (partition {r['partition']}) {KIND_LABEL[r['kind']]}: estimated against true "
               f"class shares, TV {r['tv']:.2f} (population {r['tv_population']:.2f})")
        atomic_write_bytes(folder / name, histogram_png(r["estimate"], r["true"], title))
        figures.append(f"<img src='{name}' alt='{html.escape(alt)}' title='{html.escape(alt)}'>")
    if not figures:
        return ""
    lines = "".join(f"<li>{html.escape(line.strip())}</li>" for line in leakage_lines(leak))
    return (f"<h2>Per-client label histograms</h2><p>Each client's class balance as the attacks' recovered labels "
            f"estimate it from all its captures (red) against the truth of its partition (grey); TV is the "
            f"total-variation distance, beside what the uniform prior and the population give without any "
            f"capture.</p><ul>{lines}</ul><div class='hist'>{''.join(figures)}</div>")


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:90%}
td,th{border:1px solid #aaa;padding:3px 8px}.headline{font-size:125%;background:#f3f3e8;padding:.6em;
border-left:5px solid #c33}.card{border:1px solid #ccc;margin:6px;padding:6px}.att{display:inline-block;
vertical-align:top;margin-right:12px}.att img{image-rendering:pixelated}.err{color:#b00}ul{padding-left:1.2em;
font-size:90%}.notes li{color:#7a4a00}.hist img{margin:4px}"""


def render_index(folder: Path, title: str, settings: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    records = read_jsonl(folder / "metrics.jsonl", skip=lambda line: None)
    table = summary_table(summary)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in table[1:])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in skip_notes(summary))
    by_capture: dict[str, list[Mapping[str, Any]]] = {}
    for rec in sorted(records, key=lambda r: (r["server_round"], r["node_id"])):
        by_capture.setdefault(rec["capture_id"], []).append(rec)
    cards = [c for c in (_card(recs) for recs in by_capture.values()) if c]
    settings_html = html.escape(json.dumps(dict(settings), indent=1))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>
<p class="headline" id="headline">{html.escape(headline(summary))}</p>
<p>For every capture, side by side: ADRA on the architecture update Δα, inversion of the weight update Δθ, and
the joint attack. Every grid's rows are labelled: the reconstruction, the truth (from the evaluation-only log),
and the label-only baseline (the public class mean of the recovered label). What the label alone explains is
not image leakage: compare each rate with its label-only column. Rates give k/n and a 95% Wilson interval.</p>
<table><tr>{head}</tr>{body}</table><ul class="notes">{notes}</ul>
{_histograms(folder, summary.get("label_leakage") or {})}
<h2>Captures ({len(cards)} attacked)</h2>{''.join(cards)}
<h2>Settings</h2><pre>{settings_html}</pre></body></html>"""
    atomic_write_bytes(folder / "index.html", page.encode())


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    atomic_write_json(folder / "summary.json", dict(summary))
