"""Semantic segmentation on the inference side: class masks (Otsu or a fixed threshold of the
foreground probability, or arg-max), evaluated by Jaccard and Dice per class."""

from __future__ import annotations

from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register


class Semantic(PixelTask):
    kind = "semantic"
    task = "semantic"

    def headline(self, summary: Summary) -> str:
        return (
            f"Jaccard {summary['jaccard']:.4f} (median per image {summary['jaccard_median']:.4f}), "
            f"Dice {summary['dice']:.4f}, accuracy {summary['accuracy']:.4f}"
        ) + extras(summary)

    def score(self, s: Scoring) -> Summary:
        from idl.infer.evaluate.semantic import evaluate_semantic

        return evaluate_semantic(
            s.items, s.out_dir, s.num_classes, axes=s.axes, progress=s.progress, dims=s.dims
        )


register(Semantic())
