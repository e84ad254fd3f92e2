import numpy as np
import pytest

from training.evaluation import binary_report, recall_at_fpr, threshold_at_fpr


@pytest.mark.parametrize("max_fpr", [0.0, 0.01, 0.05, 0.2])
def test_threshold_meets_the_alert_budget_and_is_the_lowest_that_does(max_fpr: float) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.05).astype(int)
    scores = rng.random(5000) + labels * 0.5
    threshold = threshold_at_fpr(labels, scores, max_fpr)
    negatives = scores[labels == 0]
    assert (negatives >= threshold).mean() <= max_fpr
    # any lower negative score as threshold would flag one negative too many
    below = negatives[negatives < threshold].max()
    assert (negatives >= below).mean() > max_fpr


def test_report_of_a_perfect_and_a_random_scorer() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    perfect = binary_report(labels, labels.astype(float))
    assert perfect["pr_auc"] == 1.0 and perfect["roc_auc"] == 1.0
    assert recall_at_fpr(labels, labels.astype(float), 0.01) == 1.0
    noise = binary_report(labels, np.random.default_rng(1).random(100))
    assert noise["pr_auc"] < 0.5
