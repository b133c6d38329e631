"""Evaluation against ground truth: metrics, per-task evaluators, figures, the HTML report and the
classical baselines."""
