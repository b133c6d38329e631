"""A self-contained HTML evaluation report (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from idl.infer.io.images import write_text


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def write_report(
    path: Path,
    title: str,
    summary: dict[str, float | int | str],
    metrics: pd.DataFrame,
    overview_figures: Sequence[Path],
    sample_figures: Sequence[Path],
    omitted: int = 0,
) -> Path:
    """Write ``report.html``: summary table, overview plots, per-image table and figures."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{v:.4f}</td></tr>"
        if isinstance(v, float)
        else f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left}img{max-width:100%;margin:0.5em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<h2>Summary</h2><table>{rows}</table>",
        *(_embed(p) for p in overview_figures),
        "<h2>Per image</h2>",
        metrics.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0),
        "<h2>Figures</h2>",
        *(_embed(p) for p in sample_figures),
    ]
    if omitted:
        parts.append(f"<p>{omitted} more figure(s) are in the evaluation folder.</p>")
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts))
