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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fednas.storage import atomic_write_bytes, atomic_write_json, read_jsonl

SCALE = 3


def grid_png(rows: Sequence[torch.Tensor], scale: int = SCALE, pad: int = 2) -> bytes:
    """PNG of image rows ([n, C, H, W] each, values in [0, 1]); missing cells stay grey."""
    n = max(len(r) for r in rows)
    c, h, w = rows[0].shape[1:]
    canvas = np.full(((h + pad) * len(rows) + pad, (w + pad) * n + pad, 3), 0.5, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            arr = img.detach().cpu().float().clamp(0, 1).numpy().transpose(1, 2, 0)
            arr = np.repeat(arr, 3, axis=2) if c == 1 else arr
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = arr
    pil = Image.fromarray((canvas * 255).round().astype(np.uint8))
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


CRITERIA_ROWS = ("recognised", "identified", "ssim>=0.5", "label", "psnr", "ssim", "mse")


def summary_table(summary: Mapping[str, Any]) -> list[list[str]]:
    """Rows: criterion, then per attack its value and its label-only baseline, then chance."""
    per = summary.get("by_attack") or {"adra": summary}
    chance = summary.get("chance", {})
    rows = [["criterion"] + [c for n in per for c in (n, f"{n}: label-only")] + ["chance"]]
    if "wire" in summary:
        wire = summary["wire"]
        rows.append(["exchanges seen (with a client update)", f"{wire['exchanges']} ({wire['with_update']})"]
                    + [""] * (2 * len(per) - 1) + [""])
    rows.append(["captures attacked (not applicable)"]
                + [c for s in per.values() for c in (f"{s.get('captures', 0)} ({s.get('not_applicable', 0)})", "")]
                + [""])
    for key in CRITERIA_ROWS:
        if any(key in s.get("attack", {}) or key in s.get("baseline", {}) for s in per.values()):
            rows.append([f"SR ({key})" if key in ("recognised", "identified", "ssim>=0.5") else key]
                        + [_fmt(v) for s in per.values()
                           for v in (s.get("attack", {}).get(key, ""), s.get("baseline", {}).get(key, ""))]
                        + [_fmt(chance.get(key, "–"))])
    return rows


def skip_notes(summary: Mapping[str, Any]) -> list[str]:
    """Why an attack did not apply (for instance: no θ on the wire when share-weights = false)."""
    return [f"{name}: not applicable to {s['not_applicable']} capture(s): {s.get('why_not', '')}"
            for name, s in (summary.get("by_attack") or {}).items() if s.get("not_applicable")]


def _card(records: Sequence[Mapping[str, Any]]) -> str:
    first, parts = records[0], []
    for rec in records:
        imgs = rec.get("images", [])
        lines = "".join(
            f"<li>#{i}: label {m.get('label')} (true {m.get('true_label', '?')}), PSNR {_fmt(m.get('psnr', ''))}, "
            f"SSIM {_fmt(m.get('ssim', ''))}, recognised {_fmt(m.get('recognised', ''))}, "
            f"identified {_fmt(m.get('identified', ''))}</li>" for i, m in enumerate(imgs))
        parts.append(
            f"<div class='att'><h4>{html.escape(rec.get('attack', 'adra'))}</h4>"
            + (f"<img src='{html.escape(rec['png'])}' alt='reconstruction grid'>" if rec.get("png") else "")
            + f"<p class='err'>{html.escape(rec.get('error') or '')}</p><ul>{lines}</ul>"
              f"<p>match loss {_fmt(rec.get('match_loss', ''))}, {_fmt(rec.get('seconds_per_image', ''))} "
              f"s/image</p></div>")
    return (f"<div class='card'><h3>round {first['server_round']} · node {first['node_id']}</h3>"
            + "".join(parts) + "</div>")


def render_index(folder: Path, title: str, settings: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    records = read_jsonl(folder / "metrics.jsonl")
    table = summary_table(summary)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in table[1:])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in skip_notes(summary))
    by_capture: dict[str, list[Mapping[str, Any]]] = {}
    for rec in sorted(records, key=lambda r: (r["server_round"], r["node_id"])):
        by_capture.setdefault(rec["capture_id"], []).append(rec)
    cards = [_card(recs) for recs in by_capture.values()]
    settings_html = html.escape(json.dumps(dict(settings), indent=1))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #aaa;
padding:3px 8px}}.card{{border:1px solid #ccc;margin:6px;padding:6px}}.att{{display:inline-block;
vertical-align:top;width:330px;margin-right:8px}}.att img{{image-rendering:pixelated;max-width:320px}}
.err{{color:#b00}}ul{{padding-left:1.2em;font-size:90%}}</style></head><body><h1>{html.escape(title)}</h1>
<p>Side by side for every capture: ADRA on the architecture update Δα, inversion of the weight update Δθ,
and the joint attack. Rows of every grid: reconstruction, ground truth (from the evaluation-only log: the
α batch for ADRA, the θ batches for the θ inversion, both for the joint attack), label-only baseline (the
public class mean of the recovered label). Recognisability the label alone explains is not image
leakage: compare with the baseline columns.</p>
<table><tr>{head}</tr>{body}</table><ul>{notes}</ul><h2>Captures ({len(by_capture)})</h2>{''.join(cards)}
<h2>Settings</h2><pre>{settings_html}</pre></body></html>"""
    atomic_write_bytes(folder / "index.html", page.encode())


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    atomic_write_json(folder / "summary.json", dict(summary))
