"""Judge a generator by measurement with the served image classifier (ONNX Runtime, no torch).

* **Class consistency**: generate ``per_class`` images of every class from
  ``draw_noise(seed, ...)`` through the exported generator graph, turn them into the served
  pixels (``to_pixels``) and count how often the stored ``image-classifier`` graph, loaded by
  ``core.model_store.load_model`` as the service loads it, labels an image as its requested
  class.
* **Fréchet distance** between Gaussians fitted to the classifier's penultimate-layer
  features (the input of its last linear layer) of generated images and of real test images,
  beside the same distance between real training and real test images of the same counts (the
  floor: what sampling alone gives). The features come from the stored classifier graph with
  that tensor added as a second graph output by the ``onnx`` API (``with_penultimate_output``),
  so any stored classifier works (the smoke one too) and nothing is retrained.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from core.image_generation import draw_noise, to_pixels
from core.model_store import LoadedModel, load_model, read_stored_model
from core.runtime import create_session

CLASSIFIER = "image-classifier:latest"
FEATURES = "penultimate_features"
BATCH = 1000

Generate = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (noise, class_id) -> [n, 28, 28]
Classify = Callable[[np.ndarray], np.ndarray]  # uint8 [n, 28, 28] -> probabilities [n, k]


def frechet_distance(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mean_a, cov_a) and N(mean_b, cov_b):
    ``|mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^(1/2))``.

    ``tr((A B)^(1/2)) = tr((A^(1/2) B A^(1/2))^(1/2))`` (similar matrices), computed with
    symmetric eigendecompositions in float64, so singular covariances are fine.
    """
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    shift = np.sum((np.asarray(mean_a, np.float64) - np.asarray(mean_b, np.float64)) ** 2)
    return float(shift + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ vectors.T


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` ``[n, d]``, in float64."""
    values = np.asarray(features, np.float64)
    return values.mean(axis=0), np.cov(values, rowvar=False)


def feature_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    return frechet_distance(*gaussian(features_a), *gaussian(features_b))


def penultimate_tensor(graph: onnx.GraphProto, output: str = "probabilities") -> str:
    """Name of the tensor entering the last linear layer (Gemm or MatMul) before ``output``.

    Walks back from ``output`` along each node's data input (Softmax, Add, ...) to that layer.
    """
    producers = {name: node for node in graph.node for name in node.output}
    initializers = {tensor.name for tensor in graph.initializer}
    node = producers.get(output)
    while node is not None and node.op_type not in ("Gemm", "MatMul"):
        data = [name for name in node.input if name in producers and name not in initializers]
        node = producers[data[0]] if data else None
    if node is None:
        raise ValueError(f"no Gemm or MatMul feeds {output!r}: not a classifier graph")
    return node.input[0]


def with_penultimate_output(onnx_path: Path, output_name: str = FEATURES) -> onnx.ModelProto:
    """The graph at ``onnx_path`` with its penultimate features as an extra output named
    ``output_name`` (an Identity of that tensor); the other outputs are unchanged."""
    model = onnx.load(str(onnx_path))
    graph = model.graph
    source = penultimate_tensor(graph)
    graph.node.append(onnx.helper.make_node("Identity", [source], [output_name]))
    graph.output.append(
        onnx.helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, ["batch", None])
    )
    onnx.checker.check_model(model)
    return model


@dataclass
class Classifier:
    """The stored classifier as served (``served``) and with its features (``features_of``)."""

    served: LoadedModel
    feature_session: object  # onnxruntime.InferenceSession

    @classmethod
    def load(cls, tag: str = CLASSIFIER) -> Classifier:
        served = load_model(tag, "cpu")  # verifies the sha256, warms up
        _, onnx_path = read_stored_model(tag)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "classifier-features.onnx"
            onnx.save(with_penultimate_output(onnx_path), str(path))
            session, _ = create_session(path, "cpu")
        return cls(served, session)

    @property
    def labels(self) -> list[str]:
        return self.served.metadata["labels"]

    @property
    def reference(self) -> dict:
        return {"name": self.served.name, "version": self.served.version}

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """The served graph's class probabilities of ``uint8 [n, 28, 28]`` images."""
        return _in_batches(lambda part: self.served.run({"images": part})["probabilities"], pixels)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``[n, d]`` of ``uint8 [n, 28, 28]`` images."""
        return _in_batches(
            lambda part: self.feature_session.run([FEATURES], {"images": part})[0], pixels
        )


def _in_batches(fn: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(rows[start : start + BATCH]) for start in range(0, len(rows), BATCH)])


def generate_pixels(
    generate: Generate, n_classes: int, per_class: int, noise_dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` served images (``to_pixels``) of each class, class by class, and their
    requested class ids; the noise is ``draw_noise(seed, n_classes * per_class, noise_dim)``."""
    noise = draw_noise(seed, n_classes * per_class, noise_dim)
    class_ids = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    images = np.concatenate(
        [
            generate(noise[start : start + BATCH], class_ids[start : start + BATCH])
            for start in range(0, len(class_ids), BATCH)
        ]
    )
    return to_pixels(images), class_ids


def class_consistency(
    predicted: np.ndarray, requested: np.ndarray, n_classes: int
) -> tuple[float, np.ndarray]:
    """Share of images whose predicted class is the requested one: overall and per class."""
    hits = np.asarray(predicted) == np.asarray(requested)
    per_class = np.array([hits[requested == c].mean() for c in range(n_classes)])
    return float(hits.mean()), per_class


def onnx_generator(onnx_path: Path) -> Generate:
    """The exported generator graph as a ``(noise, class_id) -> images`` function."""
    session, _ = create_session(onnx_path, "cpu")
    return lambda noise, class_id: session.run(["images"], {"noise": noise, "class_id": class_id})[
        0
    ]


def judge(
    generate: Generate,
    classifier: Classifier,
    real_train: np.ndarray,
    real_test: np.ndarray,
    real_test_labels: np.ndarray,
    *,
    per_class: int,
    noise_dim: int,
    seed: int,
) -> tuple[dict, np.ndarray]:
    """The judge's metrics, and the generated pixels (class by class, ``per_class`` each).

    ``real_train`` and ``real_test`` are ``uint8`` images of equal counts (the floor);
    ``real_test_labels`` give the classifier's accuracy on real images, for comparison.
    """
    labels = classifier.labels
    pixels, requested = generate_pixels(generate, len(labels), per_class, noise_dim, seed)
    predicted = classifier.probabilities(pixels).argmax(axis=1)
    overall, per_class_share = class_consistency(predicted, requested, len(labels))
    test_features = classifier.features(real_test)
    real_accuracy = float(
        (classifier.probabilities(real_test).argmax(1) == real_test_labels).mean()
    )
    distance = feature_distance(classifier.features(pixels), test_features)
    floor = feature_distance(classifier.features(real_train), test_features)
    metrics = {
        "class_consistency": round(overall, 4),
        "class_consistency_per_class": {
            label: round(float(share), 4)
            for label, share in zip(labels, per_class_share, strict=True)
        },
        "frechet_distance": round(distance, 4),
        "frechet_floor": round(floor, 4),
        "frechet_ratio": round(distance / floor, 2) if floor > 0 else None,
        "classifier_accuracy_real_test": round(real_accuracy, 4),
        "judge": {
            "classifier": classifier.reference,
            "samples_per_class": per_class,
            "noise_seed": seed,
            "real_images": {"train": len(real_train), "test": len(real_test)},
            "feature_dim": int(test_features.shape[1]),
        },
    }
    return metrics, pixels
