"""scikit-learn baselines trained on the same split and features as the neural models."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression


def fit_baselines(features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, object]:
    """Fit logistic regression and gradient-boosted trees on preprocessed training rows."""
    return {
        "logistic_regression": LogisticRegression(max_iter=1000).fit(features, labels),
        "gradient_boosted_trees": HistGradientBoostingClassifier(random_state=seed).fit(
            features, labels
        ),
    }


def baseline_scores(models: dict[str, object], features: np.ndarray) -> dict[str, np.ndarray]:
    """P(fraud) of each fitted baseline for ``features``."""
    return {name: model.predict_proba(features)[:, 1] for name, model in models.items()}
