"""The reference: TF-IDF word and bigram features with logistic regression (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from training.sentiment.data import TextSplit


def tfidf_probabilities(train: TextSplit, test: TextSplit, seed: int) -> np.ndarray:
    """Fit on ``train``; return P(positive) of every ``test`` text."""
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    pipeline.fit(train.texts, train.labels)
    return pipeline.predict_proba(test.texts)[:, 1]
