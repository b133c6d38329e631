"""The evaluation report: every section, the numbers of summary.json, the classical baseline beside
the scores, the per-image table worst first, the run's settings and training curves; rendered by a
real browser (headless Chromium, installed by .ci/run) to check that every embedded figure decodes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.model_info import ModelInfo
from idl.infer.evaluate.report import write_report
from idl.infer.evaluate.run_record import RunRecord, history_json
from idl.infer.evaluate.semantic import EvalItem, evaluate_semantic
from idl.infer.io.formats.tiff import write_tiff

SECTIONS = ("summary", "run", "training", "uncertainty", "overview", "images", "gallery")
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless Chromium here (.ci/run installs Debian's chromium package)"
)


class Cells(HTMLParser):
    """The summary cells (data-key -> shown text), section ids, per-image rows and images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}
        self.sections: list[str] = []
        self.images = 0
        self.body: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self._key: str | None = None
        self._table = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        elif tag == "img":
            self.images += 1
        elif tag == "body":
            self.body = {k: v or "" for k, v in attrs.items()}
        elif tag == "table":
            self._table = attrs.get("id", "")
        elif tag == "tr" and self._table == "per-image":
            self.rows.append([])
        elif tag == "td":
            self._key = attrs.get("data-key")
            self._cell = []

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag) -> None:
        if tag == "td" and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._key:
                self.keys[self._key] = text
            if self._table == "per-image" and self.rows:
                self.rows[-1].append(text)
            self._cell, self._key = None, None


def parse(html: str) -> Cells:
    cells = Cells()
    cells.feed(html)
    return cells


def write_run(folder: Path) -> RunRecord:
    """A model folder as idl-train leaves it: settings, plan and a history of 4 epochs, epoch 3 kept."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"task": "semantic", "model": "unet", "epochs": 4, "seed": 3})
    )
    (folder / "plan.json").write_text(
        json.dumps({"model": "unet", "patch": [64, 64], "sources": {"patch": "why"}})
    )
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_jaccard": 0.5 + 0.1 * e}
        for e in range(1, 5)
    ]
    (folder / "history.json").write_text(history_json(history, 3, "jaccard"))
    info = ModelInfo(
        "semantic",
        1,
        2,
        16,
        32,
        pixel_size=(0.65, 0.65),
        training={"n_train": 12, "n_val": 3, "patch": [64, 64]},
    )
    run = RunRecord.read(folder, info)
    assert run is not None and run.best_epoch == 3 and len(run.history) == 4
    return run


def binary_evaluation(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Three images of bright discs, predictions with a few wrong pixels (more in image 1), their
    uncertainty high where wrong, and probabilities; evaluated with figures."""
    from skimage.draw import disk

    items = []
    for i in range(3):
        truth = np.zeros((64, 80), np.uint8)
        for _ in range(4):
            truth[disk(tuple(rng.integers(10, 54, 2)), 7, shape=truth.shape)] = 1
        image = (truth * 100 + rng.normal(20, 8, truth.shape)).astype(np.float32)
        wrong = rng.random(truth.shape) < (0.02 if i != 1 else 0.08)
        pred = np.where(wrong, 1 - truth, truth).astype(np.uint8)
        probability = np.where(pred == 1, 0.9, 0.1).astype(np.float32)
        uncertainty = np.where(wrong, 0.3, 0.05).astype(np.float32)
        names = ("pred", "gt", "img", "unc", "prob")
        paths = [tmp_path / d / f"im{i}.tif" for d in names]
        for path, array in zip(paths, (pred, truth, image, uncertainty, probability), strict=True):
            write_tiff(path, array)
        items.append(EvalItem(f"im{i}", paths[0], paths[1], paths[2], paths[3], paths[4]))
    out = tmp_path / "evaluation"
    evaluate_semantic(items, out, progress=False)
    return out


def test_report_shows_every_section_the_summary_numbers_and_the_worst_image_first(tmp_path, rng) -> None:
    out = binary_evaluation(tmp_path, rng)
    summary = json.loads((out / "summary.json").read_text())
    # the baseline: Otsu on bright discs far from the noise finds them nearly exactly
    assert summary["baseline_jaccard"] > 0.95 > summary["jaccard"]
    # probabilities 0.9 / 0.1 on the predicted class; right in 1 - (wrong share) of the pixels
    confident_and_right = 1 - np.mean([0.02, 0.08, 0.02])
    assert summary["ece"] == pytest.approx(abs(0.9 - confident_and_right), abs=0.01)
    write_report(out, write_run(tmp_path / "model"))
    page = parse((out / "report.html").read_text())
    assert page.sections == list(SECTIONS)
    shown = {k: v for k, v in page.keys.items()}
    numbers = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not k.startswith("baseline_")
    }
    assert set(shown) == set(numbers)
    for key, value in numbers.items():
        assert shown[key] == (str(value) if isinstance(value, int) else f"{value:.4f}"), key
    # worst first: the image with 8 % wrong pixels heads the per-image table
    assert page.rows[1][0] == "im1"
    scores = [float(r[1]) for r in page.rows[1:]]
    assert scores == sorted(scores)
    # boxplot, reliability, risk-coverage, training curves and three per-image figures
    assert page.images == 7
    listing = json.loads((out / "figures.json").read_text())
    readings = [f["reading"] for f in listing["uncertainty"]]
    assert [f["file"] for f in listing["uncertainty"]] == ["reliability.png", "risk_coverage.png"]
    assert f"expected calibration error is {summary['ece']:.4f}" in readings[0]
    assert f"catch {100 * summary['errors_caught_10']:.0f} % of the wrong" in readings[1]


def test_report_without_a_run_says_how_to_get_uncertainty(tmp_path, rng) -> None:
    truth = (rng.random((30, 30)) > 0.5).astype(np.uint8)
    for d in ("pred", "gt"):
        write_tiff(tmp_path / d / "a.tif", truth)
    evaluate_semantic(
        [EvalItem("a", tmp_path / "pred/a.tif", tmp_path / "gt/a.tif")], tmp_path / "ev", progress=False
    )
    html = (tmp_path / "ev" / "report.html").read_text()
    page = parse(html)
    assert page.sections == ["summary", "uncertainty", "overview", "images", "gallery"]
    assert "predict with Monte Carlo samples (--mc-samples)" in html


def chromium(page: Path, *arguments: str) -> str:
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            *arguments,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@needs_chromium
def test_a_browser_renders_every_section_and_figure(tmp_path, rng) -> None:
    from idl.infer.io.images import read_image

    out = binary_evaluation(tmp_path, rng)
    write_report(out, write_run(tmp_path / "model"))
    summary = json.loads((out / "summary.json").read_text())
    dom = parse(chromium(out / "report.html", "--dump-dom"))
    # the page's own check, run by the browser once loaded: every image decoded
    assert dom.body["data-images"] == "7" and dom.body["data-broken-images"] == "0"
    assert dom.sections == list(SECTIONS)
    assert dom.keys["jaccard"] == f"{summary['jaccard']:.4f}" and dom.keys["ece"] == f"{summary['ece']:.4f}"
    shot = tmp_path / "shot.png"
    chromium(out / "report.html", f"--screenshot={shot}", "--window-size=1200,3000")
    pixels = read_image(shot).astype(np.float32)
    assert pixels.shape[:2] == (3000, 1200) and pixels.std() > 20  # text and figures, not a blank page
    # and the check can fail: a figure that does not decode is counted and named on the page
    html = (out / "report.html").read_text()
    broken = re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64,AAAA", html, count=1)
    (out / "broken.html").write_text(broken)
    dom = parse(chromium(out / "broken.html", "--dump-dom"))
    assert dom.body["data-broken-images"] == "1"
