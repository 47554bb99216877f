"""Results: reading run directories, the continual-learning metrics and their intervals,
per-item predictions, the report and the comparison of runs."""
