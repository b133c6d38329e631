"""Inference side of idl: image IO, normalization, tiling, ONNX Runtime sessions, Monte Carlo
sampling, post-processing, metrics, figures and reports.

Nothing here imports torch, so ``pip install idl-toolkit`` (without ``[train]``) runs trained models on
CPU-only machines. Code that both training and inference need lives here.
"""

# the registered image formats say which files are images (idl.infer.core.project's suffixes): loaded
# with the first import of anything in idl.infer, before any of it runs
from idl.infer.io import formats as _formats  # noqa: E402, F401
