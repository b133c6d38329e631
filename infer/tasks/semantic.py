"""Semantic segmentation on the inference side: class masks (Otsu or a fixed threshold of the
foreground probability, or arg-max), evaluated by Jaccard and Dice per class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask
from idl.infer.tasks.registry import register

if TYPE_CHECKING:
    from idl.infer.evaluate.semantic import EvalItem


class Semantic(PixelTask):
    kind = "semantic"
    task = "semantic"

    def headline(self, summary: Summary) -> str:
        return (
            f"Jaccard {summary['jaccard']:.4f} (median per image {summary['jaccard_median']:.4f}), "
            f"Dice {summary['dice']:.4f}, accuracy {summary['accuracy']:.4f}"
        ) + extras(summary)

    def score(
        self,
        items: list[EvalItem],
        out_dir: Path,
        num_classes: int | None,
        axes: str | None,
        progress: bool,
        dims: int,
    ) -> Summary:
        from idl.infer.evaluate.semantic import evaluate_semantic

        return evaluate_semantic(items, out_dir, num_classes, axes=axes, progress=progress, dims=dims)


register(Semantic())
