"""Character-level text generation with an ONNX key/value-cache graph: numpy and ONNX Runtime only.

The graph (exported by ``training.text``) takes ``input_ids [batch, sequence]``, ``position_ids
[batch, sequence]``, ``attention_mask [batch, past_sequence + sequence]`` (1 = attend, 0 =
padding) and ``past_key_values.<layer>.key|value [batch, heads, past_sequence, head_dim]``; it
returns ``logits [batch, sequence, vocab]`` and ``present.<layer>.key|value [batch, heads,
past_sequence + sequence, head_dim]``. A zero-length past is the prefill.

``TextGenerator.decode`` advances several sequences whose caches have different lengths in one
call: each past is left-padded to the longest and the padding is masked out; each sequence's
positions count from 0 at its own first token. ``sample`` draws one token from one row of logits
with the sequence's own ``numpy.random.Generator`` (one uniform draw per token), so a seeded
sequence gives the same text whatever else shares its batch. ``generate`` is the simple
one-sequence loop.

Generation goes past the context with a window that restarts (``visible_after``). The model's
position embeddings are absolute and learned for positions 0 to ``context_length - 1``, and a
cached key carries the position it was computed at, so the oldest cached positions cannot just
be dropped: the rest would keep their positions and the next one would need a position the
table does not have. Instead, when a sequence's cache is full (``context_length`` positions),
``decode`` re-reads its latest ``window_after_full`` ids (half the context, the new token
included) in a prefill, at positions 0 onwards, and the cache grows from there again. So the
model sees, at each step, every id since the window last restarted: never fewer than half the
context, never more than the whole of it; one prefill of half a context every half a context
of new ids keeps the cache's advantage over recomputing every step (``bench.text_cache``).

Imports neither torch, ``training``, ``models`` nor ``service``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

INPUT_IDS, POSITION_IDS, ATTENTION_MASK, LOGITS = (
    "input_ids",
    "position_ids",
    "attention_mask",
    "logits",
)
# Symbolic axis names of the exported graph (also recorded in the model's metadata).
BATCH, SEQUENCE, PAST_SEQUENCE, TOTAL_SEQUENCE = (
    "batch",
    "sequence",
    "past_sequence",
    "total_sequence",
)


def past_name(layer: int, kind: str) -> str:
    """Graph input name of one layer's cached keys (``kind="key"``) or values (``"value"``)."""
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    """Graph output name of one layer's grown keys or values."""
    return f"present.{layer}.{kind}"


class UnknownCharacterError(ValueError):
    """A character of the text is not in the model's vocabulary."""

    def __init__(self, char: str, position: int) -> None:
        super().__init__(
            f"character {char!r} (U+{ord(char):04X}) at position {position} is not in the "
            "model's vocabulary"
        )
        self.char = char
        self.position = position


class CharVocabulary:
    """Ordered characters; a character's id is its position in the list."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("a vocabulary is a list of distinct single characters")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> CharVocabulary:
        """The vocabulary stored with the model (``metadata["vocabulary"]``)."""
        return cls(metadata["vocabulary"])

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``'s characters; UnknownCharacterError names the first unknown one."""
        index = self.index
        try:
            return [index[c] for c in text]
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in index)
            raise UnknownCharacterError(text[position], position) from None

    def decode(self, ids: Sequence[int]) -> str:
        """The characters of ``ids`` (IndexError on an id outside the vocabulary)."""
        chars = self.chars
        return "".join(chars[i] for i in ids)


def window_after_full(context_length: int) -> int:
    """Ids re-read (the latest ones) when a cache is full: half the context, at least 1."""
    return max(1, context_length // 2)


def visible_after(ids: Sequence[int], token: int, context_length: int) -> list[int]:
    """The ids the model reads to predict what follows ``token``, when it read ``ids`` for
    ``token``: ``ids`` and ``token``, or, when they would pass the context, their last
    ``window_after_full(context_length)`` (the window restarts at position 0)."""
    grown = [*ids, token]
    if len(grown) > context_length:
        return grown[-window_after_full(context_length) :]
    return grown


@dataclass
class KVCache:
    """One sequence's cache: per layer ``(key, value)``, each ``[1, heads, length, head_dim]``,
    and ``ids``, the ``length`` ids whose keys and values these are (to re-read them when the
    cache is full).

    Caches made by ``TextGenerator`` are views of the batched arrays of the call that made
    them (``source``, ``row``): when the next ``decode`` gets the same batch in the same order,
    those arrays are fed back as they are (no copy); otherwise they are gathered per source.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    ids: tuple[int, ...]
    source: list[np.ndarray] | None = field(default=None, repr=False, compare=False)
    row: int = field(default=0, repr=False, compare=False)

    @property
    def length(self) -> int:
        """Positions cached (the sequence's length so far)."""
        return int(self.layers[0][0].shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes of the cached keys and values."""
        return sum(key.nbytes + value.nbytes for key, value in self.layers)

    def _arrays(self) -> list[np.ndarray]:
        """Flat ``[key 0, value 0, key 1, ...]`` arrays holding this cache at ``row``."""
        if self.source is not None:
            return self.source
        return [array for pair in self.layers for array in pair]


def _caches_of(
    present: list[np.ndarray], pads: list[int], ids: list[tuple[int, ...]]
) -> list[KVCache]:
    """One KVCache per row of a call's ``present`` outputs (row ``r`` starts at ``pads[r]``
    and caches ``ids[r]``)."""
    return [
        KVCache(
            [
                (present[i][row : row + 1, :, pad:], present[i + 1][row : row + 1, :, pad:])
                for i in range(0, len(present), 2)
            ],
            row_ids,
            source=present,
            row=row,
        )
        for row, (pad, row_ids) in enumerate(zip(pads, ids, strict=True))
    ]


GraphCall = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def session_call(session: ort.InferenceSession) -> GraphCall:
    """A bare ONNX Runtime session as a ``GraphCall`` (training's and the benches' sessions;
    the service passes its ``LoadedModel.run``)."""
    names = [output.name for output in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


class TextGenerator:
    """Prefill and batched one-token decode over one call of the cache graph: ``run`` takes
    named inputs and gives named outputs (the service's is ``LoadedModel.run``, the one ONNX
    Runtime call path of every served model)."""

    def __init__(self, run: GraphCall, metadata: dict[str, Any]) -> None:
        self._call = run
        self.context_length = int(metadata["context_length"])
        self.layers = int(metadata["layers"])
        self.heads = int(metadata["heads"])
        self.head_dim = int(metadata["head_dim"])
        self.vocab_size = len(metadata["vocabulary"])
        self._past_names = [
            (past_name(layer, "key"), past_name(layer, "value")) for layer in range(self.layers)
        ]
        self._flat_past_names = [name for pair in self._past_names for name in pair]
        self._output_names = [LOGITS] + [
            present_name(layer, kind) for layer in range(self.layers) for kind in ("key", "value")
        ]
        missing = {n for pair in self._past_names for n in pair} - {
            spec["name"] for spec in metadata["inputs"]
        }
        if missing:
            raise ValueError(f"the graph lacks the cache inputs {sorted(missing)}")

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        outputs = self._call(feeds)
        return outputs[LOGITS], [outputs[name] for name in self._output_names[1:]]

    def prefill(
        self, prompt_ids: Sequence[int], every_position: bool = False
    ) -> tuple[np.ndarray, KVCache]:
        """Read 1 to ``context_length`` prompt ids: last position's logits ``[vocab]`` (every
        position's, ``[steps, vocab]``, when ``every_position``), cache."""
        steps = len(prompt_ids)
        if not 1 <= steps <= self.context_length:
            raise ValueError(f"a prompt has 1 to {self.context_length} tokens, not {steps}")
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, steps)
        self._check_ids(ids)
        empty = np.zeros((1, self.heads, 0, self.head_dim), dtype=np.float32)
        feeds = {
            INPUT_IDS: ids,
            POSITION_IDS: np.arange(steps, dtype=np.int64).reshape(1, steps),
            ATTENTION_MASK: np.ones((1, steps), dtype=np.int64),
        }
        for key_name, value_name in self._past_names:
            feeds[key_name] = feeds[value_name] = empty
        logits, present = self._run(feeds)
        last = logits[0] if every_position else logits[0, -1]
        return last, _caches_of(present, [0], [tuple(prompt_ids)])[0]

    def decode(
        self, tokens: Sequence[int], caches: Sequence[KVCache]
    ) -> tuple[np.ndarray, list[KVCache]]:
        """One new token per sequence: logits ``[batch, vocab]`` and the grown caches.

        The sequences whose cache has room advance in ONE call: caches may differ in length,
        each is left-padded to the longest, and the attention mask hides the padding. A full
        cache (``context_length`` positions) is replaced by the prefill of its
        ``visible_after`` window (one call each). The returned caches are views of the
        outputs (the inputs are not modified).
        """
        batch = len(tokens)
        if batch == 0 or batch != len(caches):
            raise ValueError(f"{batch} tokens for {len(caches)} caches")
        full = [row for row, cache in enumerate(caches) if cache.length >= self.context_length]
        if not full:
            return self._decode_together(tokens, caches)
        logits = np.empty((batch, self.vocab_size), dtype=np.float32)
        grown = list(caches)
        for row in full:
            window = visible_after(caches[row].ids, tokens[row], self.context_length)
            logits[row], grown[row] = self.prefill(window)
        rest = sorted(set(range(batch)) - set(full))
        if rest:
            rest_logits, rest_grown = self._decode_together(
                [tokens[row] for row in rest], [caches[row] for row in rest]
            )
            logits[rest] = rest_logits
            for row, cache in zip(rest, rest_grown, strict=True):
                grown[row] = cache
        return logits, grown

    def _decode_together(
        self, tokens: Sequence[int], caches: Sequence[KVCache]
    ) -> tuple[np.ndarray, list[KVCache]]:
        """``decode`` of caches that all have room, in one call."""
        batch = len(tokens)
        lengths = np.fromiter((cache.length for cache in caches), dtype=np.int64, count=batch)
        longest = int(lengths.max())
        ids = np.asarray(tokens, dtype=np.int64).reshape(batch, 1)
        self._check_ids(ids)
        pads = (longest - lengths).tolist()
        feeds = {
            INPUT_IDS: ids,
            POSITION_IDS: lengths.reshape(batch, 1),
            ATTENTION_MASK: (
                np.arange(longest + 1, dtype=np.int64)[None, :] >= (longest - lengths)[:, None]
            ).astype(np.int64),
        }
        feeds.update(zip(self._flat_past_names, self._gather(caches, longest), strict=True))
        logits, present = self._run(feeds)
        grown_ids = [(*cache.ids, token) for cache, token in zip(caches, tokens, strict=True)]
        return logits[:, -1], _caches_of(present, pads, grown_ids)

    def _gather(self, caches: Sequence[KVCache], longest: int) -> list[np.ndarray]:
        """The past inputs ``[batch, heads, longest, head_dim]``, each cache left-padded.

        The same batch as the previous call, in the same order: its outputs, as they are.
        Otherwise one gather per source (previous call or prefill) and array; the padding
        is zero (masked out, but it must be finite).
        """
        batch = len(caches)
        groups: dict[int, tuple[list[np.ndarray], list[int], list[int]]] = {}
        for position, cache in enumerate(caches):
            arrays = cache._arrays()
            group = groups.setdefault(id(arrays), (arrays, [], []))
            group[1].append(position)
            group[2].append(cache.row)
        if len(groups) == 1:
            arrays, _, rows = next(iter(groups.values()))
            first = arrays[0]
            if (
                first.shape[0] == batch
                and first.shape[2] == longest
                and rows == list(range(batch))
                and all(array.flags.c_contiguous for array in arrays)
            ):
                return arrays
        shape = (batch, self.heads, longest, self.head_dim)
        pasts = [np.empty(shape, dtype=np.float32) for _ in range(2 * self.layers)]
        for arrays, positions, rows in groups.values():
            total = arrays[0].shape[2]
            shift = longest - total  # >= 0: pad in front; < 0: drop the source's front
            whole = len(positions) == batch and positions == list(range(batch))
            where = slice(None) if whole else np.asarray(positions)
            which = np.asarray(rows)
            for past, array in zip(pasts, arrays, strict=True):
                if shift >= 0:
                    if shift:
                        past[where, :, :shift] = 0.0
                    past[where, :, shift:] = array[which]
                else:
                    past[where] = array[which, :, -shift:]
        return pasts


MAX_PENALTY = 2.0  # OpenAI's range for presence and frequency penalties: [-2, 2]
MAX_BIAS = 100.0  # OpenAI's range for a logit bias: [-100, 100]


@dataclass(frozen=True)
class SamplingParams:
    """Temperature 0 is greedy; ``top_k`` 0 and ``top_p`` 1 turn those filters off.

    ``presence_penalty`` and ``frequency_penalty`` (each in [-2, 2]) and ``logit_bias`` (token
    id -> a value in [-100, 100]) change the logits before sampling, as OpenAI documents:
    ``logit[j] - count[j] * frequency_penalty - (count[j] > 0) * presence_penalty + bias[j]``,
    where ``count[j]`` is how often token ``j`` was generated so far (``adjusted_logits``).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, not {self.top_k}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:
                raise ValueError(f"{name} must lie in [-2, 2], not {getattr(self, name)}")
        for token, bias in self.logit_bias:
            if token < 0 or not -MAX_BIAS <= bias <= MAX_BIAS:
                raise ValueError(f"logit_bias: {token} -> {bias} (ids >= 0, values in [-100, 100])")

    @property
    def penalised(self) -> bool:
        """Whether the penalties depend on the tokens generated so far (counts needed)."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    @property
    def adjusts(self) -> bool:
        """Whether ``adjusted_logits`` changes anything."""
        return self.penalised or bool(self.logit_bias)


def adjusted_logits(
    logits: np.ndarray, params: SamplingParams, counts: np.ndarray | None = None
) -> np.ndarray:
    """One row of logits ``[vocab]`` (float64) with the bias and the penalties applied
    (``counts[j]``: times token ``j`` was generated so far; ``None``: none yet)."""
    row = np.array(logits, dtype=np.float64).reshape(-1)
    for token, bias in params.logit_bias:
        row[token] += bias
    if counts is not None and params.penalised:
        row -= counts * params.frequency_penalty + (counts > 0) * params.presence_penalty
    return row


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log probabilities (float64) along the last axis of ``logits`` (``[..., vocab]``)."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sample(
    logits: np.ndarray,
    params: SamplingParams,
    rng: np.random.Generator,
    counts: np.ndarray | None = None,
) -> int:
    """One token id from one row of logits ``[vocab]``, after ``adjusted_logits`` (``counts``:
    the tokens generated so far, for the penalties).

    Greedy (the first maximum) when the temperature is 0, else the ``top_k`` most likely ids
    (ties to the lower id), cut to the smallest prefix whose probability reaches ``top_p``, and
    one draw from that by inverse CDF with exactly one ``rng.random()``. A temperature so small
    that the logits divided by it overflow (a subnormal such as 5e-324) is greedy too: it is
    the limit those temperatures approach, where the division would give inf - inf = NaN.
    """
    if params.adjusts:
        row = adjusted_logits(logits, params, counts)
    else:
        row = np.asarray(logits, dtype=np.float64).reshape(-1)
    if params.temperature == 0:
        return int(np.argmax(row))
    order = np.argsort(-row, kind="stable")
    if 0 < params.top_k < len(order):
        order = order[: params.top_k]
    with np.errstate(over="ignore"):
        scaled = row[order] / params.temperature
    if not np.isfinite(scaled).all():
        return int(np.argmax(row))
    probabilities = np.exp(scaled - scaled[0])
    probabilities /= probabilities.sum()
    cumulative = np.cumsum(probabilities)
    if params.top_p < 1:
        keep = int(np.searchsorted(cumulative, params.top_p)) + 1
        order, cumulative = order[:keep], cumulative[:keep]
    draw = rng.random() * cumulative[-1]
    return int(order[min(int(np.searchsorted(cumulative, draw, side="right")), len(order) - 1)])


class CachedDecoder(Protocol):
    """What ``generate`` needs: ``TextGenerator``, or a reference with the same interface."""

    context_length: int

    def prefill(self, prompt_ids: list[int]) -> tuple[np.ndarray, Any]: ...

    def decode(self, tokens: list[int], caches: list[Any]) -> tuple[np.ndarray, list[Any]]: ...


@dataclass(frozen=True)
class Window:
    """``Recompute``'s stand-in for a cache: the ids the model read last."""

    ids: list[int]

    @property
    def length(self) -> int:
        return len(self.ids)


WindowRule = Callable[[Sequence[int], int, int], list[int]]


class Recompute:
    """A ``CachedDecoder`` without a cache, for parity checks and benchmarks: every call reads
    its whole window again with ``last_logits`` (ids -> the last position's logits).

    ``rule`` gives the next window from the last one, the new token and the context length:
    ``visible_after`` by default (the windows ``TextGenerator`` sees), or nanoGPT's crop to
    the last ``context_length`` ids (``crop_to_context``).
    """

    def __init__(
        self,
        last_logits: Callable[[list[int]], np.ndarray],
        context_length: int,
        rule: WindowRule = visible_after,
    ) -> None:
        self.last_logits = last_logits
        self.context_length = context_length
        self.rule = rule

    def prefill(self, prompt_ids: Sequence[int]) -> tuple[np.ndarray, Window]:
        window = Window(list(prompt_ids))
        return self.last_logits(window.ids), window

    def decode(
        self, tokens: Sequence[int], caches: Sequence[Window]
    ) -> tuple[np.ndarray, list[Window]]:
        grown = [
            Window(self.rule(window.ids, token, self.context_length))
            for token, window in zip(tokens, caches, strict=True)
        ]
        return np.stack([self.last_logits(window.ids) for window in grown]), grown


def crop_to_context(ids: Sequence[int], token: int, context_length: int) -> list[int]:
    """nanoGPT's window: the last ``context_length`` ids, the new token included."""
    return [*ids, token][-context_length:]


def generate(
    generator: CachedDecoder,
    prompt_ids: Sequence[int],
    max_new: int,
    params: SamplingParams = SamplingParams(temperature=0),
    seed: int | None = None,
) -> list[int]:
    """``max_new`` new ids after ``prompt_ids`` (which must not be empty), one sequence.

    A prompt longer than the context keeps its last ``context_length`` ids; past the context,
    the decoder's window rule applies (``TextGenerator``: ``visible_after``).
    """
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token")
    rng = np.random.default_rng(seed)
    logits, cache = generator.prefill(list(prompt_ids)[-generator.context_length :])
    new: list[int] = []
    while len(new) < max_new:
        token = sample(logits, params, rng)
        new.append(token)
        if len(new) == max_new:
            break
        batch_logits, (cache,) = generator.decode([token], [cache])
        logits = batch_logits[0]
    return new
