"""From network output to results, and ground truth in the same terms: thresholds and class maps,
semantic and instance labels, class labels and the classifier's results table, Monte Carlo statistics
and the typicality check. The task modules (:mod:`idl.infer.tasks`) put these together."""
