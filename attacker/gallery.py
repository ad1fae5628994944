"""What the interceptor leaves behind: PNG grids, metrics.jsonl and a self-contained index.html.

``reconstructions/<threat-model>/``:
  r0001-n<node>.png   rows: reconstruction, ground truth (when the evaluation log has it), label-only baseline
  metrics.jsonl       one line per capture: per-image metrics, attack settings, seconds
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


def summary_table(summary: Mapping[str, Any]) -> list[list[str]]:
    """Rows: criterion, attack, label-only baseline, chance."""
    attack, base, chance = summary.get("attack", {}), summary.get("baseline", {}), summary.get("chance", {})
    rows = [["criterion", "attack", "label-only baseline", "chance"]]
    if "wire" in summary:
        wire = summary["wire"]
        rows.append(["exchanges seen (with a client update)", f"{wire['exchanges']} ({wire['with_update']})", "", ""])
    for key in ("recognised", "identified", "ssim>=0.5", "label", "psnr", "ssim", "mse"):
        if key in attack or key in base:
            rows.append([f"SR ({key})" if key in ("recognised", "identified", "ssim>=0.5") else key,
                         _fmt(attack.get(key, "")), _fmt(base.get(key, "")), _fmt(chance.get(key, "–"))])
    return rows


def render_index(folder: Path, title: str, settings: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    records = read_jsonl(folder / "metrics.jsonl")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in summary_table(summary)[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in summary_table(summary)[1:])
    cards = []
    for rec in sorted(records, key=lambda r: (r["server_round"], r["node_id"])):
        imgs = rec.get("images", [])
        lines = "".join(
            f"<li>#{i}: label {m.get('label')} (true {m.get('true_label', '?')}), PSNR {_fmt(m.get('psnr', ''))}, "
            f"SSIM {_fmt(m.get('ssim', ''))}, recognised {_fmt(m.get('recognised', ''))}, "
            f"identified {_fmt(m.get('identified', ''))}</li>" for i, m in enumerate(imgs))
        status = html.escape(rec.get("error") or "")
        cards.append(
            f"<div class='card'><h3>round {rec['server_round']} · node {rec['node_id']}</h3>"
            + (f"<img src='{html.escape(rec['png'])}' alt='reconstruction grid'>" if rec.get("png") else "")
            + f"<p class='err'>{status}</p><ul>{lines}</ul><p>match loss {_fmt(rec.get('match_loss', ''))}, "
              f"{_fmt(rec.get('seconds_per_image', ''))} s/image</p></div>")
    settings_html = html.escape(json.dumps(dict(settings), indent=1))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #aaa;
padding:3px 8px}}.card{{display:inline-block;vertical-align:top;border:1px solid #ccc;margin:6px;padding:6px;
width:330px}}.card img{{image-rendering:pixelated;max-width:320px}}.err{{color:#b00}}ul{{padding-left:1.2em;
font-size:90%}}</style></head><body><h1>{html.escape(title)}</h1>
<p>Rows of every grid: reconstruction, ground truth (from the evaluation-only log), label-only baseline
(the public class mean of the recovered label). Recognisability the label alone explains is not image leakage:
compare with the baseline column.</p>
<table><tr>{head}</tr>{body}</table><h2>Captures ({len(records)})</h2>{''.join(cards)}
<h2>Settings</h2><pre>{settings_html}</pre></body></html>"""
    atomic_write_bytes(folder / "index.html", page.encode())


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    atomic_write_json(folder / "summary.json", dict(summary))
