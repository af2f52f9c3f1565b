"""Rating accuracy: rank correlation of ratings against ground-truth accuracies."""

from bossnas.evaluation.correlation import Correlation, correlate, load_scores, load_truth

__all__ = ["Correlation", "correlate", "load_scores", "load_truth"]
