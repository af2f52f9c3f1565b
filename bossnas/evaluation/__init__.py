"""Rating accuracy: rank correlation of ratings against ground-truth accuracies, overall and
where size is held fixed (:mod:`bossnas.evaluation.size_controlled`)."""

from bossnas.evaluation.correlation import (
    Correlation,
    RatingAccuracy,
    correlate,
    load_costs,
    load_scores,
    load_truth,
    rating_accuracy_files,
    read_score_table,
)
from bossnas.evaluation.size_controlled import (
    block_accuracy,
    budget_picks,
    partial_spearman,
    path_marginals,
    size_controlled,
    top_fraction_kendall,
    within_size_spearman,
)

__all__ = [
    "Correlation", "RatingAccuracy", "block_accuracy", "budget_picks", "correlate", "load_costs", "load_scores",
    "load_truth", "partial_spearman", "path_marginals", "rating_accuracy_files", "read_score_table",
    "size_controlled", "top_fraction_kendall", "within_size_spearman",
]
