"""The evaluation report: one self-contained HTML file (figures embedded as base64 PNG, a few lines of
inline script, nothing fetched) that a biologist opens to see how good a model is and where to look.

It is a view of the evaluation folder (``summary.json``, ``metrics.csv`` and the figures listed in
``figures.json``, all written by the task's evaluation) and, when the predictions came from a model
``idl-train`` made, of its run (:class:`~idl.infer.evaluate.run_record.RunRecord`). Sections, each a
``<section id=...>``: the summary with the classical baseline beside the scores, the run's settings
and data, the training curves, the uncertainty (calibration and risk-coverage, each figure with the
sentence that reads it), the other overview figures, the per-image table (sortable, worst first) and
the gallery of per-image figures (worst first).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from idl.infer.evaluate.run_record import RunRecord, save_training_curves
from idl.infer.io.images import write_text

REPORT_NAME = "report.html"
FIGURES_NAME = "figures.json"
BASELINE_PREFIX = "baseline_"  # summary.json: the classical baseline's value of a score

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    "th.sortable{cursor:pointer;background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%;margin:0.5em 0}figure{margin:1em 0;display:inline-block;vertical-align:top;"
    "max-width:640px}figcaption{font-size:0.9em;color:#444}.reading{font-size:0.95em;max-width:60em}"
    "#broken{color:#b00;font-weight:bold}details{margin:0.5em 0}"
)

# sorts the per-image table by the clicked column (numbers as numbers, a second click reverses) and
# says on the page (and in the DOM, for tests) when an embedded figure failed to decode
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.classList.add('sortable');
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.order !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value || a.cells[column].textContent;
        var y = b.cells[column].dataset.value || b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      th.dataset.order = up ? 'asc' : 'desc';
    });
  });
});
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.dataset.images = images.length;
  document.body.dataset.brokenImages = broken.length;
  if (broken.length) {
    document.getElementById('broken').textContent = broken.length + ' figure(s) could not be shown.';
  }
});
"""


def _embed(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if isinstance(value, int):
        return str(value)
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num" data-value="{value!r}">{_number(value)}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _summary(summary: dict[str, Any], baseline: str) -> str:
    """Every score of ``summary.json`` (its exact value in ``data-key``/``data-value``), with the
    classical baseline's value of the same score beside it."""
    head = "<tr><th>score</th><th>model</th>" + (f"<th>{html.escape(baseline)}</th>" if baseline else "")
    rows = [head + "</tr>"]
    for key, value in summary.items():
        if key.startswith(BASELINE_PREFIX) or not isinstance(value, int | float):
            continue
        base = summary.get(BASELINE_PREFIX + key)
        cells = f'<td class="num" data-key="{html.escape(key)}" data-value="{value!r}">{_number(value)}</td>'
        if baseline:
            cells += _cell(base) if base is not None else "<td></td>"
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return f'<table id="summary-table">{"".join(rows)}</table>'


def _figure(folder: Path, figure: dict[str, str]) -> str:
    path = folder / figure["file"]
    if not path.is_file():
        return ""
    reading = f'<p class="reading">{html.escape(figure["reading"])}</p>' if figure.get("reading") else ""
    caption = html.escape(figure.get("title", ""))
    return f"<figure>{_embed(path, caption)}<figcaption>{caption}</figcaption>{reading}</figure>"


def _per_image(metrics: pd.DataFrame, anchors: dict[str, str]) -> str:
    columns = list(metrics.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    rows = []
    for record in metrics.to_dict("records"):
        cells = []
        for c in columns:
            value = record[c]
            if c == "filename" and str(value) in anchors:
                cells.append(f'<td><a href="#{anchors[str(value)]}">{html.escape(str(value))}</a></td>')
            else:
                cells.append(_cell(value))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    body = "".join(rows)
    table = '<table class="sortable" id="per-image">'
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _run_sections(folder: Path, run: RunRecord) -> list[str]:
    parts = ['<section id="run"><h2>Run</h2>']
    parts.append(f"<p>Model folder: {html.escape(str(run.folder))}</p>")
    if run.data:
        parts.append("<h3>Data</h3>" + _table(list(run.data.items())))
    if run.settings:
        settings = run.ordered_settings()
        parts.append("<h3>Settings</h3>" + _table([(k, _setting(v)) for k, v in settings[:14]]))
        if len(settings) > 14:
            rest = _table([(k, _setting(v)) for k, v in settings[14:]])
            parts.append(f"<details><summary>all settings</summary>{rest}</details>")
    if run.plan:
        plan = [(k, _setting(v)) for k, v in run.plan.items() if k != "sources" and v not in ("", [], None)]
        sources = run.plan.get("sources") or {}
        parts.append("<h3>Plan</h3>" + _table(plan))
        if sources:
            parts.append(
                "<details><summary>why (the plan's sources)</summary>"
                + _table(list(sources.items()))
                + "</details>"
            )
    parts.append("</section>")
    curves = save_training_curves(folder / "training_curves.png", run)
    if curves is not None:
        best = next((h for h in run.history if h.get("epoch") == run.best_epoch), None)
        reading = f"{len(run.history)} epoch(s); the model kept is that of epoch {run.best_epoch}" + (
            f", validation {run.metric} {best[f'val_{run.metric}']:.4f}."
            if best and f"val_{run.metric}" in best
            else "."
        )
        parts.append(
            '<section id="training"><h2>Training</h2>'
            + _figure(folder, {"file": curves.name, "title": "Training curves", "reading": reading})
            + "</section>"
        )
    return parts


def _setting(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return "" if value is None else value


def write_report(folder: Path, run: RunRecord | None = None) -> Path:
    """Write ``folder/report.html`` from the evaluation written into ``folder`` (and the ``run``
    that made the model, when known); returns its path."""
    summary = json.loads((folder / "summary.json").read_text())
    listing = json.loads((folder / FIGURES_NAME).read_text())
    metrics = pd.read_csv(folder / "metrics.csv", dtype={"filename": str})
    title = listing.get("title", "idl evaluation")
    score = listing.get("score")
    if score in metrics:  # worst first: the images to look at
        metrics = metrics.sort_values(
            score, ascending=bool(listing.get("higher_is_better", True)), kind="stable"
        )
    gallery = {g["name"]: g for g in listing.get("gallery", [])}
    order = [n for n in metrics["filename"].astype(str) if n in gallery] if "filename" in metrics else []
    order += [n for n in gallery if n not in order]
    shown = order[: listing.get("max_gallery", 50)]
    anchors = {name: f"image-{i}" for i, name in enumerate(shown)}
    facts = listing.get("facts", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p id='broken'></p>",
        '<section id="summary"><h2>Summary</h2>',
        _table(list(facts.items())) if facts else "",
        _summary(summary, listing.get("baseline", "")),
        "</section>",
    ]
    if run is not None:
        parts += _run_sections(folder, run)
    uncertainty = listing.get("uncertainty", [])
    parts.append('<section id="uncertainty"><h2>Uncertainty</h2>')
    if uncertainty:
        parts += [_figure(folder, f) for f in uncertainty]
    else:
        parts.append(
            "<p>No uncertainty was measured: predict with Monte Carlo samples (--mc-samples) or test-time "
            "augmentation (--tta) to see how well it flags the errors.</p>"
        )
    parts.append("</section>")
    if listing.get("overview"):
        parts += [
            '<section id="overview"><h2>Overview</h2>',
            *(_figure(folder, f) for f in listing["overview"]),
        ]
        parts.append("</section>")
    parts += [
        '<section id="images"><h2>Per image</h2>',
        f"<p>Worst first by {html.escape(str(score))}; click a column to sort by it.</p>" if score else "",
        _per_image(metrics, anchors),
        "</section>",
        '<section id="gallery"><h2>Gallery</h2>',
    ]
    for name in shown:
        figure = _figure(folder, {"file": gallery[name]["file"], "title": name})
        parts.append(f'<div id="{anchors[name]}">{figure}</div>')
    if len(order) > len(shown):
        parts.append(f"<p>{len(order) - len(shown)} more figure(s) are in the evaluation folder.</p>")
    parts += ["</section>", f"<script>{SCRIPT}</script></body></html>"]
    return write_text(folder / REPORT_NAME, "\n".join(p for p in parts if p))
