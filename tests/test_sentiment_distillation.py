"""The GRU learns from the transformer: soft targets, the loss they stand for, the refusal of
a teacher the run does not train, and what the smoke report records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.text_encoding import TextEncoder
from models.text import RecurrentClassifier, RecurrentConfig
from training.cli import main
from training.sentiment.data import TextSplit
from training.sentiment.fit import predict_probabilities
from training.sentiment.models import Built
from training.sentiment.tokenizer import train_wordpiece
from training.sentiment.train import Trained, distilled

TEXTS = ["a wonderful film", "a dreadful bore", "wonderful cast", "dull and dreadful"] * 2


def _teacher() -> Trained:
    torch.manual_seed(0)
    tokenizer = train_wordpiece(TEXTS, vocab_size=100)
    model = RecurrentClassifier(RecurrentConfig(vocab_size=tokenizer.get_vocab_size())).eval()
    built = Built(model, TextEncoder(tokenizer, 16), torch.optim.SGD(model.parameters()), {})
    return Trained(built, {}, np.zeros(0), 0.0)


def test_soft_targets_mix_the_label_and_the_teacher_and_stand_for_both_losses() -> None:
    train = TextSplit(TEXTS, np.array([1, 0, 1, 0] * 2))
    teacher = _teacher()
    probabilities = predict_probabilities(teacher.built.classifier, train, teacher.built.encoder)
    assert not np.allclose(probabilities, train.labels)
    np.testing.assert_allclose(distilled(train, teacher, 0.0).labels, train.labels)
    np.testing.assert_allclose(distilled(train, teacher, 1.0).labels, probabilities, rtol=1e-6)
    soft = torch.from_numpy(distilled(train, teacher, 0.3).labels)
    assert distilled(train, teacher, 0.3).texts == TEXTS and soft.dtype == torch.float32
    logits = torch.linspace(-2, 2, len(TEXTS))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    mixed = 0.7 * bce(logits, torch.tensor(train.labels, dtype=torch.float32))
    mixed += 0.3 * bce(logits, torch.from_numpy(probabilities))
    torch.testing.assert_close(bce(logits, soft), mixed)


@pytest.mark.parametrize("weight", ["0.5", "1.5"])
def test_a_teacher_the_run_does_not_train_is_refused(weight: str) -> None:
    expected = "--model both" if weight == "0.5" else "within 0 and 1"
    with pytest.raises(SystemExit, match=expected):
        main(["sentiment", "--preset", "smoke", "--model", "rnn", "--teacher-weight", weight])


def test_the_smoke_report_says_the_gru_learned_from_the_transformer(
    stored_models: dict[str, dict],
) -> None:
    path = Path(os.environ["DLSERVE_REPORTS"]) / "sentiment-smoke" / "metrics.json"
    report = json.loads(path.read_text())
    assert (report["rnn"]["teacher_weight"], report["transformer"]["teacher_weight"]) == (0.5, 0)
    assert stored_models["sentiment-rnn"]["training"]["teacher_weight"] == 0.5
    assert len(report["rnn"]["validation_accuracy_per_epoch"]) == 1  # the smoke preset's epoch
    assert report["duration_seconds"] > 0 and report["machine"]["cores"] >= 1
