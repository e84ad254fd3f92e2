"""Sentiment pieces without a server: data splits, padding rule, batching, padding invariance,
and (when the full model is in the default store) unambiguous sentences."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from core.text_encoding import TOKENIZER_FILE, TextEncoder
from models.text import RecurrentClassifier, RecurrentConfig
from service.batching import MicroBatcher, concatenate_padded
from training.sentiment.data import load_reviews, split_reviews
from training.sentiment.models import minilm_dir
from training.sentiment.tokenizer import train_wordpiece


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    frame = load_reviews()
    assert frame["text"].is_unique and set(frame["label"]) == {0, 1}
    splits = split_reviews(frame, seed=0)
    texts = [set(split.texts) for split in splits]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(len(t) for t in texts) == len(frame)
    rates = [split.labels.mean() for split in splits]
    assert max(rates) - min(rates) < 0.01
    assert split_reviews(frame, seed=0)[2].texts == splits[2].texts


def test_a_batch_of_short_texts_is_padded_to_its_longest_not_the_maximum() -> None:
    encoder = TextEncoder.from_file(minilm_dir() / TOKENIZER_FILE, max_tokens=128)
    arrays, truncated = encoder.encode(["great", "a truly great film", "bad"])
    lengths = arrays["attention_mask"].sum(1)
    assert arrays["input_ids"].shape == (3, lengths.max()) and lengths.max() < 10
    assert list(lengths) == [3, 6, 3] and truncated == [False, False, False]
    assert (arrays["input_ids"][arrays["attention_mask"] == 0] == 0).all()


def test_joined_requests_are_padded_to_the_longest_among_them() -> None:
    short = {"input_ids": np.ones((2, 3), np.int64), "attention_mask": np.ones((2, 3), np.int64)}
    long = {"input_ids": np.ones((1, 7), np.int64), "attention_mask": np.ones((1, 7), np.int64)}
    joined = concatenate_padded([short, long])
    assert joined["input_ids"].shape == (3, 7)
    assert joined["attention_mask"].sum(1).tolist() == [3, 3, 7]


def test_the_batcher_joins_sequences_of_different_lengths() -> None:
    calls: list[tuple[int, int]] = []

    def infer(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["attention_mask"].shape)
        return {"length": inputs["attention_mask"].sum(1)}

    batcher = MicroBatcher(infer, max_batch_rows=64, join=concatenate_padded)

    async def main() -> list[dict[str, np.ndarray]]:
        requests = [{"attention_mask": np.ones((2, width), np.int64)} for width in range(1, 9)]
        return await asyncio.gather(*(batcher.submit(r) for r in requests))

    results = asyncio.run(main())
    assert [r["length"].tolist() for r in results] == [[w, w] for w in range(1, 9)]
    assert len(calls) < 8  # some requests were joined


def test_the_recurrent_classifier_ignores_padding() -> None:
    torch.manual_seed(0)
    model = RecurrentClassifier(RecurrentConfig(vocab_size=50)).eval()
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:], ids[1, 4:] = 0, 0
    padded_ids = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), model(padded_ids, padded_mask))
        torch.testing.assert_close(model(ids, mask)[1:], model(ids[1:, :4], mask[1:, :4]))


def test_the_wordpiece_tokenizer_knows_only_its_training_texts() -> None:
    tokenizer = train_wordpiece(["a wonderful film", "a wonderful cast"] * 3, vocab_size=200)
    assert "wonderful" in tokenizer.get_vocab()
    assert "dreadful" not in tokenizer.get_vocab()
    assert tokenizer.token_to_id("[PAD]") == 0
