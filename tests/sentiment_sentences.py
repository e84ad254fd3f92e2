"""Real review sentences for the sentiment tests: the first texts of the full data's test split."""

from __future__ import annotations

from functools import cache

from training.sentiment.data import load_reviews, split_reviews


@cache
def review_sentences(count: int = 24) -> list[str]:
    """``count`` real Rotten Tomatoes snippets from the test split (seed 0)."""
    return split_reviews(load_reviews(), seed=0)[2].texts[:count]
