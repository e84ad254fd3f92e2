"""Text -> model inputs with a stored Hugging Face ``tokenizers`` file (no torch).

Training and the service share this encoder, so a text is tokenised the same way in both.
A batch is padded to its longest member, never to ``max_tokens``; texts longer than
``max_tokens`` are truncated (special tokens kept) and flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


class TextEncoder:
    """Encodes texts into ``input_ids`` and ``attention_mask`` (int64, [batch, longest])."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(max_tokens)
        pad_id = tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    @classmethod
    def from_file(cls, path: Path, max_tokens: int) -> TextEncoder:
        return cls(Tokenizer.from_file(str(path)), max_tokens)

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list[bool]]:
        """``({"input_ids", "attention_mask"}, truncated)`` for ``texts``, in order; no texts
        give arrays of shape ``[0, 1]``."""
        if not texts:
            empty = np.zeros((0, 1), dtype=np.int64)
            return {"input_ids": empty, "attention_mask": empty}, []
        encodings = self.tokenizer.encode_batch(texts)
        width = max(1, len(encodings[0].ids))  # texts without any token: one padding column
        arrays = {
            "input_ids": _rows([e.ids for e in encodings], width),
            "attention_mask": _rows([e.attention_mask for e in encodings], width),
        }
        return arrays, [bool(e.overflowing) for e in encodings]


def _rows(values: list[list[int]], width: int) -> np.ndarray:
    """Equal-length rows (already padded by the tokenizer) as int64 [rows, width]."""
    array = np.zeros((len(values), width), dtype=np.int64)
    array[:, : len(values[0])] = values
    return array
