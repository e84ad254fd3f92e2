"""Embeddings: the pre-trained all-MiniLM-L6-v2 as a sentence embedder (no training), exported."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from tokenizers import Tokenizer

from core.text_encoding import TOKENIZER_FILE, TextEncoder
from models.embedding import SentenceEmbedder
from training.areas import TrainingArea
from training.export import check_parity, export_onnx
from training.registry import register_model
from training.reports import report_dir, write_metrics
from training.sentiment.data import load_reviews
from training.sentiment.models import MINILM_PACKAGE, load_minilm, minilm_dir

STORE_NAME = "text-embedder"
OUTPUT = "sentence_embedding"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): longer
# texts are truncated there too.
MAX_TOKENS = 256
# Stricter than the project's 1e-4: the route promises sentence-transformers' vectors to 1e-5.
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Preset:
    """Review texts the export is traced on, and checked on (with one text longer than
    ``MAX_TOKENS`` tokens, so truncation is in the check)."""

    trace_texts: int
    parity_texts: int


PRESETS = {"smoke": Preset(trace_texts=4, parity_texts=16), "full": Preset(8, 256)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags of its own: there is nothing to train."""


def build_embedder() -> tuple[SentenceEmbedder, TextEncoder]:
    """The pre-trained encoder with mean pooling and normalisation, and its own tokenizer
    (truncating at ``MAX_TOKENS``)."""
    tokenizer = Tokenizer.from_file(str(minilm_dir() / TOKENIZER_FILE))
    tokenizer.no_padding()
    return SentenceEmbedder(load_minilm()).eval(), TextEncoder(tokenizer, MAX_TOKENS)


def parity_texts(preset: Preset) -> tuple[list[str], list[str]]:
    """Distinct review snippets: the tracing texts, and the checked ones plus one long text
    (every checked snippet joined)."""
    texts = load_reviews()["text"].tolist()
    traced = texts[: preset.trace_texts]
    checked = texts[preset.trace_texts : preset.trace_texts + preset.parity_texts]
    return traced, [*checked, " ".join(checked * 8)]


def export_embedder(
    embedder: SentenceEmbedder, encoder: TextEncoder, preset: Preset, directory: Path
) -> tuple[Path, float, int]:
    """Export with dynamic batch and sequence axes; the parity gate (``PARITY_TOLERANCE``)
    runs other texts, another batch size and length. Returns the file, the largest absolute
    difference and the number of texts checked."""
    traced, checked = parity_texts(preset)
    example, _ = encoder.encode(traced)
    inputs, _ = encoder.encode(checked)
    path = export_onnx(
        embedder,
        {name: torch.from_numpy(value) for name, value in example.items()},
        [OUTPUT],
        directory / "model.onnx",
        {name: {0: "batch", 1: "sequence"} for name in example},
    )
    tensors = {name: torch.from_numpy(value) for name, value in inputs.items()}
    return path, check_parity(embedder, path, tensors, PARITY_TOLERANCE), len(checked)


def model_metadata(dimensions: int, parity: dict, args: argparse.Namespace) -> dict:
    """What the service and a reader need besides the weights (see training.registry)."""
    sequence = {"dtype": "int64", "shape": ["batch", "sequence"]}
    return {
        "task": "feature-extraction",
        "inputs": [{"name": "input_ids", **sequence}, {"name": "attention_mask", **sequence}],
        "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": ["batch", dimensions]}],
        "dimensions": dimensions,
        "max_tokens": MAX_TOKENS,
        "preprocessing": {
            "tokenizer_file": TOKENIZER_FILE,
            "padding": "right, to the longest text of the batch, attention_mask 0 on padding",
            "truncation": f"at max_tokens={MAX_TOKENS} tokens, special tokens kept",
        },
        "architecture": {
            "architecture": "all-MiniLM-L6-v2 encoder, attention-mask mean pooling, L2 norm",
            "pretrained": f"{MINILM_PACKAGE}=={version(MINILM_PACKAGE.replace('_', '-'))}",
            "fine_tuned": False,
        },
        "metrics": parity,
        "training": {"area": "embeddings", "preset": args.preset},
    }


def run(args: argparse.Namespace) -> str:
    """Wrap, export with the parity gate, optionally register, report; return the figures."""
    preset = PRESETS[args.preset]
    started = time.perf_counter()
    embedder, encoder = build_embedder()
    dimensions = int(embedder.encoder.config.hidden_size)
    if args.dry_run:
        arrays, _ = encoder.encode(["A sentence to embed."])
        with torch.no_grad():
            norm = float(embedder(*map(torch.from_numpy, arrays.values())).norm())
        return f"{dimensions} dimensions, norm {norm:.6f}"
    entry: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        path, worst, texts = export_embedder(embedder, encoder, preset, Path(scratch))
        entry["parity"] = {"max_abs_diff": worst, "texts": texts, "tolerance": PARITY_TOLERANCE}
        tokenizer_path = Path(scratch) / TOKENIZER_FILE
        encoder.tokenizer.save(str(tokenizer_path))
        metadata = model_metadata(dimensions, entry["parity"], args)
        if args.register:
            stored = register_model(STORE_NAME, path, metadata, (tokenizer_path,))
            entry["registered"] = {"name": stored["name"], "version": stored["version"]}
    directory = report_dir("embeddings", args.preset)
    entry["duration_seconds"] = round(time.perf_counter() - started, 1)
    report = {"area": "embeddings", "preset": args.preset, "preset_config": asdict(preset)}
    write_metrics(directory, {**report, **entry})
    return (
        f"{dimensions} dimensions, ONNX vs PyTorch max abs diff {worst:.2g} on {texts} texts; "
        f"report in {directory}"
    )


AREA = TrainingArea(
    name="embeddings",
    models=(STORE_NAME,),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    full_minutes=2,  # no training: load, export, parity (118 s measured)
)
