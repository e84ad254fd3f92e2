"""Binary-classification quality numbers shared by every area that ranks rows by a score."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold whose false-positive rate on these rows is at most ``max_fpr``.

    Rule: flag ``score >= threshold``. The threshold is the smallest negative-class score
    that leaves at most ``floor(max_fpr * negatives)`` negatives at or above it, so the alert
    budget is met on the rows it was chosen on while recall is as high as the budget allows.
    """
    negatives = np.sort(scores[labels == 0])[::-1]
    allowed = int(np.floor(max_fpr * len(negatives)))
    if allowed >= len(negatives):
        return float(negatives[-1])
    # Strictly above the (allowed+1)-th highest negative score.
    return float(np.nextafter(negatives[allowed], np.inf))


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest true-positive rate reachable with false-positive rate <= ``max_fpr`` (ROC)."""
    false_positive, true_positive, _ = roc_curve(labels, scores)
    return float(true_positive[false_positive <= max_fpr].max())


def binary_report(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> dict:
    """PR-AUC (average precision), ROC-AUC and recall at ``max_fpr`` for one scorer."""
    return {
        "pr_auc": round(float(average_precision_score(labels, scores)), 4),
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
        f"recall_at_{max_fpr:g}_fpr": round(recall_at_fpr(labels, scores, max_fpr), 4),
    }


def label_report(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, F1 (positive class), ROC-AUC, Brier score and the confusion matrix
    (rows: true negative/positive; columns: predicted) when predicting ``p >= threshold``.
    """
    predicted = (probabilities >= threshold).astype(int)
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "f1": round(float(f1_score(labels, predicted)), 4),
        "roc_auc": round(float(roc_auc_score(labels, probabilities)), 4),
        "brier": round(float(brier_score_loss(labels, probabilities)), 4),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
    }
