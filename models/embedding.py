"""Sentence embeddings: a Transformer encoder, mean pooling over the attention mask, L2
normalisation (what sentence-transformers' ``Transformer -> Pooling(mean) -> Normalize`` does).
"""

from __future__ import annotations

import torch
from torch import nn

from models.text import masked_mean


class SentenceEmbedder(nn.Module):
    """``(input_ids, attention_mask) -> embedding`` [batch, hidden], each row of unit L2 norm.

    ``encoder`` is a Hugging Face encoder (``last_hidden_state`` of [batch, seq, hidden]).
    Padding-invariant: padded positions are masked out of attention and of the mean.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(masked_mean(hidden, attention_mask), p=2.0, dim=1)
