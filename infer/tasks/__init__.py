"""What each task does with a network's output: thresholds and class maps, instance labels, class
labels and classification, Monte Carlo statistics and the typicality check."""
