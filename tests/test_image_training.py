"""Image area: the IDX loader, augmentation, the smoke run's report and the exported graph."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.model_store import load_model
from harness.images import load_test_images
from models.cnn import CNNConfig, ImageClassifier
from training.cli import main
from training.image.augment import random_erase, shift_and_flip
from training.image.data import CLASSES, DataError, default_dir, load_splits, read_idx

REPORTS = Path(os.environ["DLSERVE_REPORTS"])


def test_splits_hold_out_validation_from_train() -> None:
    train, validation, test = load_splits(default_dir(), validation_rows=5000, seed=0)
    assert (len(train.labels), len(validation.labels), len(test.labels)) == (55_000, 5000, 10_000)
    assert train.images.shape[1:] == (28, 28) and train.images.dtype == np.uint8
    assert set(np.unique(validation.labels)) == set(range(len(CLASSES)))


def test_malformed_idx_file_is_refused(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x01" + b"\x00" * 16)  # a labels magic number
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte", 2051)
    with pytest.raises(DataError, match="not found"):
        load_splits(tmp_path / "missing", 10, 0)


def test_augment_moves_each_image_by_at_most_two_pixels_or_mirrors_it() -> None:
    images = torch.zeros((500, 28, 28), dtype=torch.uint8)
    images[:, 10, 5] = 255  # one lit pixel per image
    torch.manual_seed(0)
    moved = shift_and_flip(images)
    assert moved.shape == images.shape and moved.dtype == torch.uint8
    rows, columns = (moved == 255).nonzero()[:, 1:].T
    assert len(rows) == 500 and (moved > 0).sum() == 500
    assert (rows - 10).abs().max() <= 2 and len(rows.unique()) == 5
    plain, mirrored = (columns - 5).abs() <= 2, (columns - 22).abs() <= 2
    assert bool((plain | mirrored).all()) and 150 < int(mirrored.sum()) < 350


def test_random_erase_fills_one_box_in_about_half_the_images() -> None:
    images = torch.zeros((1000, 28, 28), dtype=torch.uint8)
    torch.manual_seed(0)
    erased = random_erase(images)
    changed = (erased != 0).flatten(1).any(1)
    assert 400 < int(changed.sum()) < 600
    for image in erased[changed][:50]:
        rows, columns = (image != 0).nonzero().T
        box = image[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        assert box.numel() <= 0.25 * 28 * 28 + 28  # rounding may add a row or column
        assert (box != 0).float().mean() > 0.9  # one filled rectangle, not scattered pixels


def test_dry_run_trains_one_batch_and_writes_nothing(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DLSERVE_REPORTS", str(tmp_path))
    assert main(["image", "--preset", "smoke", "--dry-run", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_smoke_run_reports_accuracy_plots_and_registers(image_model: dict) -> None:
    metrics = json.loads((REPORTS / "image-smoke" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1
    assert list(metrics["per_class_accuracy"]) == list(CLASSES)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == metrics["data"]["test"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert metrics["parameters"] > 10_000 and metrics["parity_max_abs_diff"] <= 1e-4
    for plot in ("confusion_matrix.png", "training_curves.png"):
        assert (REPORTS / "image-smoke" / plot).stat().st_size > 1000
    assert metrics["registered"]["version"] == image_model["version"]
    assert image_model["labels"] == list(CLASSES)


def test_exported_graph_takes_raw_uint8_images(image_model: dict) -> None:
    model = load_model("image-classifier:latest", "cpu")
    images, _ = load_test_images(32)
    outputs = model.run({"images": images})
    probabilities = outputs["probabilities"]
    assert probabilities.shape == (32, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(outputs["confidence"], probabilities.max(1), atol=1e-6)
    with pytest.raises(Exception, match=r"(?i)type"):
        model.run({"images": images.astype(np.float32)})


def test_the_mirror_average_is_the_mean_of_an_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = ImageClassifier(CNNConfig(mirror_average=True)).eval()
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        probabilities, confidence = model(images)
        alone = torch.softmax(model.cnn(model.standardise(images)), -1)
        mirrored = torch.softmax(model.cnn(model.standardise(images.flip(-1))), -1)
        torch.testing.assert_close(probabilities, (alone + mirrored) / 2)
        torch.testing.assert_close(model(images.flip(-1))[0], probabilities)
        torch.testing.assert_close(confidence, probabilities.amax(-1))
        assert not torch.allclose(alone, mirrored)  # the CNN itself is not symmetric


def test_the_smoke_report_has_the_averaging_and_mirror_ablation(image_model: dict) -> None:
    metrics = json.loads((REPORTS / "image-smoke" / "metrics.json").read_text())
    ablation = metrics["ablation_test_accuracy"]
    assert list(ablation) == ["raw", "raw_mirrored", "averaged", "averaged_mirrored"]
    assert ablation["raw"] == metrics["test_accuracy"]
    assert len(metrics["curves"]["validation_averaged"]) == len(metrics["curves"]["validation"])
    assert metrics["machine"]["cores"] >= 1 and isinstance(metrics["machine"]["native_bf16"], bool)
