"""A small decoder-only Transformer for characters, in the spirit of karpathy/nanoGPT's model.py.

Pre-LayerNorm blocks (causal self-attention, then an MLP), learned positions, and the output
layer tied to the token embedding. Two ways in:

- ``GPT.forward(ids)``: the whole sequence at once (training, evaluation), causal attention
  through ``scaled_dot_product_attention(is_causal=True)``.
- ``GPT.forward_cached(...)``: new tokens against an explicit key/value cache, with position
  ids and an attention mask (1 = attend, 0 = padding) over past + new positions. The mask is
  built explicitly (causal within the new tokens, plus ``attention_mask``): ``is_causal=True``
  is wrong once there is a cache, as it aligns the triangle to the top-left corner.
  ``CachedGPT`` wraps it with flat arguments for the ONNX export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

KVPair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the network; ``context_length`` is the number of learned positions."""

    vocab_size: int = 65
    context_length: int = 128
    layers: int = 4
    heads: int = 4
    width: int = 256
    mlp_ratio: int = 4
    dropout: float = 0.0
    bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"width {config.width} is not a multiple of heads {config.heads}")
        self.heads, self.head_dim = config.heads, config.head_dim
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.bias)
        self.proj = nn.Linear(config.width, config.width, bias=config.bias)
        self.dropout = config.dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, T, 3C]`` -> q, k, v each ``[B, heads, T, head_dim]``."""
        batch, steps, _ = x.shape
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, self.head_dim).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        batch, _, steps, _ = y.shape
        y = y.transpose(1, 2).reshape(batch, steps, self.heads * self.head_dim)
        return self.residual_dropout(self.proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(x)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self._merge(y)

    def forward_cached(
        self, x: torch.Tensor, mask: torch.Tensor, past: KVPair
    ) -> tuple[torch.Tensor, KVPair]:
        """New positions ``x [B, T, C]`` against ``past`` (each ``[B, heads, P, head_dim]``).

        ``mask [B, 1, T, P + T]`` is True where a query may attend a key. Returns the output
        and the grown cache (past and new keys/values concatenated on the sequence axis).
        """
        q, k, v = self._split(x)
        k = torch.cat((past[0], k), dim=2)
        v = torch.cat((past[1], v), dim=2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        # A finite minimum, not -inf: a fully masked row (a padding query) stays finite.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        y = torch.softmax(scores, dim=-1) @ v
        return self._merge(y), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.up = nn.Linear(config.width, hidden, bias=config.bias)
        self.down = nn.Linear(hidden, config.width, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_attention = nn.LayerNorm(config.width, bias=config.bias)
        self.attention = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.width, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_attention(x))
        return x + self.mlp(self.ln_mlp(x))

    def forward_cached(
        self, x: torch.Tensor, mask: torch.Tensor, past: KVPair
    ) -> tuple[torch.Tensor, KVPair]:
        attended, present = self.attention.forward_cached(self.ln_attention(x), mask, past)
        x = x + attended
        return x + self.mlp(self.ln_mlp(x)), present


class GPT(nn.Module):
    """Character ids ``[B, T]`` -> next-character logits ``[B, T, vocab]``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.context_length, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_final = nn.LayerNorm(config.width, bias=config.bias)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied embeddings
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that feed the residual stream.
        for name, parameter in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def parameter_count(self) -> int:
        """Distinct parameters (the tied output layer counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        steps = ids.shape[1]
        if steps > self.config.context_length:
            raise ValueError(f"{steps} positions > context length {self.config.context_length}")
        positions = torch.arange(steps, device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))

    def forward_cached(
        self,
        ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        past: list[KVPair],
    ) -> tuple[torch.Tensor, list[KVPair]]:
        """New tokens against a cache: logits ``[B, T, vocab]`` and the grown cache.

        ``ids`` and ``position_ids`` are ``[B, T]``; ``attention_mask [B, P + T]`` (1 = attend)
        covers the past and the new positions; ``past`` has one ``(key, value)`` per layer,
        each ``[B, heads, P, head_dim]`` (``P`` may be 0).
        """
        steps = ids.shape[1]
        total = attention_mask.shape[1]
        past_length = total - steps
        # Query i (absolute index past_length + i) may attend keys 0 .. past_length + i.
        keys = torch.arange(total, device=ids.device)
        queries = torch.arange(steps, device=ids.device) + past_length
        causal = keys.unsqueeze(0) <= queries.unsqueeze(1)  # [T, P + T]
        mask = causal.unsqueeze(0).unsqueeze(0) & attention_mask.bool()[:, None, None, :]
        x = self.token_embedding(ids) + self.position_embedding(position_ids)
        present = []
        for block, layer_past in zip(self.blocks, past, strict=True):
            x, layer_present = block.forward_cached(x, mask, layer_past)
            present.append(layer_present)
        return self.head(self.ln_final(x)), present


class CachedGPT(nn.Module):
    """``GPT.forward_cached`` with flat tensors in and out, as the ONNX graph has them.

    In: ``input_ids, position_ids, attention_mask, past_0_key, past_0_value, ...``;
    out: ``logits, present_0_key, present_0_value, ...``.
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *past_flat: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        past = [(past_flat[i], past_flat[i + 1]) for i in range(0, len(past_flat), 2)]
        logits, present = self.gpt.forward_cached(input_ids, position_ids, attention_mask, past)
        return (logits, *(tensor for pair in present for tensor in pair))


def empty_cache(config: GPTConfig, batch: int = 1) -> list[KVPair]:
    """A zero-length cache: one ``(key, value)`` of shape ``[batch, heads, 0, head_dim]`` each."""
    shape = (batch, config.heads, 0, config.head_dim)
    return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(config.layers)]
