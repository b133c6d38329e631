"""Inference side of idl: image IO, normalization, tiling, ONNX Runtime sessions, Monte Carlo
sampling, post-processing, metrics, figures and reports.

Nothing here imports torch, so ``pip install idl-toolkit`` (without ``[train]``) runs trained models on
CPU-only machines. Code that both training and inference need lives here.
"""
