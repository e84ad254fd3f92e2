"""Text classifiers over ``input_ids`` and ``attention_mask`` (right-padded, int64 [batch, seq]).

Both return one logit per text; ``PositiveProbability`` wraps either for export. Both are
padding-invariant: a text's output does not depend on how far its batch is padded, so the
service may pad every batch to its longest member.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [batch, seq, dim] over positions where ``mask`` [batch, seq] is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max of ``hidden`` over positions where ``mask`` is 1 (padding never wins)."""
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, -1e4).amax(1)


def reverse_valid(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each row's valid (unpadded) prefix of ``values`` [batch, seq, dim] in place.

    Padding stays at the end, so a backward recurrent pass reads real tokens first.
    """
    lengths = mask.sum(1, keepdim=True)
    positions = torch.arange(values.shape[1], device=values.device).unsqueeze(0)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[2]))


@dataclass(frozen=True)
class RecurrentConfig:
    """Size of the recurrent classifier."""

    vocab_size: int
    embedding_dim: int = 128
    hidden_size: int = 128
    dropout: float = 0.3
    pad_id: int = 0


class RecurrentClassifier(nn.Module):
    """Bidirectional GRU over token embeddings; masked mean and max pooling; linear head.

    The two directions are separate GRUs, the backward one over each row's reversed valid
    prefix, which keeps padding out of both directions' states (unlike ``bidirectional=True``
    over a padded batch).
    """

    def __init__(self, config: RecurrentConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, config.pad_id)
        self.forward_gru = nn.GRU(config.embedding_dim, config.hidden_size, batch_first=True)
        self.backward_gru = nn.GRU(config.embedding_dim, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(4 * config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(input_ids))
        forward_states, _ = self.forward_gru(embedded)
        backward_states, _ = self.backward_gru(reverse_valid(embedded, attention_mask))
        states = torch.cat([forward_states, backward_states], dim=-1)
        pooled = torch.cat(
            [masked_mean(states, attention_mask), masked_max(states, attention_mask)], dim=-1
        )
        return self.head(self.dropout(pooled)).squeeze(-1)


class EncoderClassifier(nn.Module):
    """A pretrained Transformer encoder, mean pooling over the attention mask, linear head.

    ``encoder`` is a Hugging Face encoder (``last_hidden_state`` of [batch, seq, hidden]).
    """

    def __init__(self, encoder: nn.Module, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(masked_mean(hidden, attention_mask))).squeeze(-1)


class PositiveProbability(nn.Module):
    """The exported graph: ``(input_ids, attention_mask) -> P(positive)`` of shape [batch]."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(input_ids, attention_mask))
