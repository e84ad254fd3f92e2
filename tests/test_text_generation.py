"""Text area: the plays' Markdown, the vocabulary, the KV cache in torch and ONNX, sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from core.model_store import load_model, read_stored_model
from core.text_generation import (
    CharVocabulary,
    KVCache,
    Recompute,
    SamplingParams,
    TextGenerator,
    UnknownCharacterError,
    generate,
    sample,
    session_call,
    visible_after,
)
from models.gpt import GPT, GPTConfig, empty_cache
from training.cli import main
from training.completion import Completion
from training.export import ParityError
from training.text.data import load_text, play_files, split_text, strip_markdown
from training.text.export import check_generation_parity, export_cached, open_session
from training.text.train import model_metadata

REPORTS = Path(os.environ["DLSERVE_REPORTS"])

SAMPLE_MARKDOWN = """# As You Like It

## ACT I

### SCENE I. Orchard of Oliver's house.

_Enter ORLANDO and ADAM_

**ORLANDO**  
As I remember, Adam, it was upon this fashion  
bequeathed me by will but poor a thousand crowns,


**ADAM**  
Yonder comes my master, your brother. __\\[Aside]_  
defect,--'Ladies,'\\--or 'Fair-ladies--I would wish  

_Enter, from one side, OBERON, with his train; from the other, TITANIA, with
hers_
"""  # noqa: W291 (Markdown hard line breaks)

SAMPLE_TEXT = """As You Like It

ACT I

SCENE I. Orchard of Oliver's house.

Enter ORLANDO and ADAM

ORLANDO
As I remember, Adam, it was upon this fashion
bequeathed me by will but poor a thousand crowns,

ADAM
Yonder comes my master, your brother. [Aside]
defect,--'Ladies,'--or 'Fair-ladies--I would wish

Enter, from one side, OBERON, with his train; from the other, TITANIA, with
hers
"""


def test_markdown_is_stripped_to_play_text() -> None:
    assert strip_markdown(SAMPLE_MARKDOWN) == SAMPLE_TEXT


def test_the_38_plays_split_with_the_last_tenth_held_out() -> None:
    files = play_files()
    assert len(files) == 38 and {f.parent.name for f in files} >= {"comedies", "tragedies"}
    plays = load_text()
    assert not set(plays) & set("*_#\\") and "\nHAMLET\nTo be, or not to be" in plays
    assert 4_900_000 < len(plays) < 5_000_000
    text = "ab" * 45 + "cd" * 5  # the last tenth holds 'c' and 'd' only
    corpus = split_text(text)
    assert corpus.vocabulary.chars == ["a", "b"]
    assert len(corpus.train) == 90 and len(corpus.validation) == 0
    assert corpus.validation_dropped == 10


def test_vocabulary_round_trip_and_unknown_character_position() -> None:
    vocabulary = CharVocabulary.from_metadata({"vocabulary": list("\n ,AEHLMTbenort")})
    text = "HAMLET\nTo be, or not to be"
    ids = vocabulary.encode(text)
    assert vocabulary.decode(ids) == text and ids[:3] == [5, 3, 7]
    with pytest.raises(UnknownCharacterError) as caught:
        vocabulary.encode("To be, or not to be: that")
    assert caught.value.char == ":" and caught.value.position == 19
    assert "position 19" in str(caught.value)


@pytest.fixture(scope="module")
def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, context_length=16, layers=2, heads=2, width=16)).eval()
    with torch.no_grad():  # larger weights than the init, so that attention is not uniform
        for parameter in gpt.parameters():
            parameter.mul_(8)
    return gpt


@pytest.mark.parametrize("past", [0, 1, 5, 7])
def test_torch_decode_with_cache_equals_full_recompute(tiny_gpt: GPT, past: int) -> None:
    ids = torch.randint(0, 20, (2, past + 3), generator=torch.Generator().manual_seed(past))
    with torch.no_grad():
        full = tiny_gpt(ids)
        cache = empty_cache(tiny_gpt.config, batch=2)
        if past:
            positions = torch.arange(past).expand(2, past)
            _, cache = tiny_gpt.forward_cached(
                ids[:, :past], positions, torch.ones(2, past, dtype=torch.long), cache
            )
        for step in range(past, past + 3):  # one new token at a time against the cache
            logits, cache = tiny_gpt.forward_cached(
                ids[:, step : step + 1],
                torch.full((2, 1), step),
                torch.ones(2, step + 1, dtype=torch.long),
                cache,
            )
            torch.testing.assert_close(logits[:, 0], full[:, step], atol=1e-4, rtol=1e-5)
    assert cache[0][0].shape == (2, 2, past + 3, 8)


def test_torch_left_padded_past_is_masked_out(tiny_gpt: GPT) -> None:
    """Row 0 has 2 real past positions behind 4 of padding; it must match its unpadded run."""
    ids = torch.randint(0, 20, (1, 3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = tiny_gpt(ids)[0, -1]
        _, short = tiny_gpt.forward_cached(
            ids[:, :2], torch.arange(2)[None], torch.ones(1, 2, dtype=torch.long),
            empty_cache(tiny_gpt.config),
        )  # fmt: skip
        padded = [(torch.cat((torch.randn(1, 2, 4, 8), k), 2),
                   torch.cat((torch.randn(1, 2, 4, 8), v), 2)) for k, v in short]  # fmt: skip
        mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
        logits, _ = tiny_gpt.forward_cached(ids[:, 2:], torch.tensor([[2]]), mask, padded)
        unmasked, _ = tiny_gpt.forward_cached(
            ids[:, 2:], torch.tensor([[2]]), torch.ones_like(mask), padded
        )
    torch.testing.assert_close(logits[0, 0], full, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(unmasked[0, 0], full, atol=1e-3)  # the mask is what did it


@pytest.fixture(scope="module")
def tiny_export(tiny_gpt: GPT, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = export_cached(tiny_gpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    corpus = split_text("".join(chr(ord("a") + i % 20) for i in range(400)))
    completion = Completion("steps", 1, 1)
    metadata = model_metadata(tiny_gpt.config, corpus, {"val_loss": 0.0}, completion, _args())
    return path, metadata


def _args() -> object:
    class Args:
        preset, seed = "test", 0

    return Args()


def test_export_names_the_dynamic_axes(tiny_export: tuple[Path, dict]) -> None:
    graph = onnx.load(str(tiny_export[0])).graph
    shapes = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output]
    }
    assert shapes["input_ids"] == shapes["position_ids"] == ["batch", "sequence"]
    assert shapes["attention_mask"] == ["batch", "total_sequence"]
    assert shapes["past_key_values.1.value"] == ["batch", 2, "past_sequence", 8]
    assert shapes["present.0.key"] == ["batch", 2, "total_sequence", 8]
    assert shapes["logits"] == ["batch", "sequence", 20]
    assert [s["name"] for s in tiny_export[1]["inputs"]] == [i.name for i in graph.input]


def test_onnx_greedy_decoding_matches_torch_and_the_gate_catches_a_mismatch(
    tiny_gpt: GPT, tiny_export: tuple[Path, dict]
) -> None:
    path, metadata = tiny_export
    prompts = [[1, 2, 3], [5], list(range(16))]  # the last one fills the context at once
    parity = check_generation_parity(tiny_gpt, path, metadata, prompts, characters=40)
    assert parity["prefill_logits_max_abs_diff"] <= 1e-4
    torch.manual_seed(1)
    other = GPT(tiny_gpt.config).eval()
    with pytest.raises(ParityError):
        check_generation_parity(other, path, metadata, prompts, characters=40)


def test_onnx_cache_past_lengths_match_prefill(tiny_export: tuple[Path, dict]) -> None:
    generator = TextGenerator(session_call(open_session(tiny_export[0])), tiny_export[1])
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    for past in (1, 5, 7):
        _, cache = generator.prefill(ids[:past])
        for step in range(past, len(ids)):
            logits, (cache,) = generator.decode([ids[step]], [cache])
            want, _ = generator.prefill(ids[: step + 1])
            np.testing.assert_allclose(logits[0], want, atol=1e-4, rtol=0)
        assert cache.length == len(ids)


def _stored_generator(text_model: dict) -> TextGenerator:
    metadata, onnx_path = read_stored_model(f"text-generator:{text_model['version']}")
    return TextGenerator(session_call(open_session(onnx_path)), metadata)


def test_batched_decode_of_unequal_lengths_equals_single_decodes(text_model: dict) -> None:
    generator = _stored_generator(text_model)
    vocabulary = CharVocabulary.from_metadata(text_model)
    prompts = [vocabulary.encode(p) for p in ("ROMEO\nO", "KING\nMy lord, the", "A")]
    caches = [generator.prefill(p)[1] for p in prompts]
    assert [c.length for c in caches] == [7, 17, 1]
    tokens = [vocabulary.index[c] for c in "e ,"]
    batched, grown = generator.decode(tokens, caches)
    assert batched.shape == (3, len(vocabulary))
    for row, (token, cache) in enumerate(zip(tokens, caches, strict=True)):
        alone, (single,) = generator.decode([token], [cache])
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-4, rtol=0)
        assert grown[row].length == cache.length + 1
        for got, want in zip(grown[row].layers, single.layers, strict=True):
            np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
            np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
    # The same batch again (its outputs fed back without a copy), then a batch mixing two of
    # those rows in another order with a fresh prefill (gathered per source).
    again, _ = generator.decode(tokens, grown)
    _, fresh = generator.prefill(vocabulary.encode("HAMLET\nTo be, or not"))
    mixed, mixed_grown = generator.decode([5, 6, 7], [grown[2], fresh, grown[0]])
    for row in range(3):
        alone, _ = generator.decode([tokens[row]], [grown[row]])
        np.testing.assert_allclose(again[row], alone[0], atol=1e-4, rtol=0)
    for row, (token, cache) in enumerate(zip([5, 6, 7], [grown[2], fresh, grown[0]], strict=True)):
        alone, _ = generator.decode([token], [cache])
        np.testing.assert_allclose(mixed[row], alone[0], atol=1e-4, rtol=0)
    assert [c.length for c in mixed_grown] == [3, 21, 9]


def test_the_window_restarts_at_half_the_context_when_full() -> None:
    assert visible_after([1, 2, 3], 4, 8) == [1, 2, 3, 4]
    assert visible_after(list(range(7)), 7, 8) == list(range(8))  # the context, full
    assert visible_after(list(range(8)), 8, 8) == [5, 6, 7, 8]  # half of it, token included
    assert visible_after([], 5, 1) == [5]


def test_windowed_decode_equals_recomputing_the_same_window(text_model: dict) -> None:
    """Greedy, 6 contexts long: at every step the served decode's logits equal a plain prefill
    of the ids the model should see (every id since the window last restarted, the window
    restarting at the last half context when it would pass the context)."""
    generator = _stored_generator(text_model)
    context = generator.context_length
    history = [3, 1, 4, 1, 5]
    start = 0  # where the visible window begins in ``history``
    logits, cache = generator.prefill(history)
    lengths = []
    for _ in range(6 * context):
        token = int(np.argmax(logits))
        history.append(token)
        if len(history) - start > context:
            start = len(history) - context // 2
        (logits,), (cache,) = generator.decode([token], [cache])
        visible = history[start:]
        assert cache.ids == tuple(visible) and cache.length == len(visible)
        np.testing.assert_allclose(logits, generator.prefill(visible)[0], atol=1e-4, rtol=0)
        lengths.append(cache.length)
    assert max(lengths) == context and min(lengths[context:]) == context // 2
    assert lengths.count(context // 2) >= 10  # the window restarted at least ten times
    served = generate(generator, [3, 1, 4, 1, 5], 6 * context)
    recomputed = Recompute(lambda ids: generator.prefill(ids)[0], context)
    assert served == history[5:] == generate(recomputed, [3, 1, 4, 1, 5], 6 * context)


def test_seeded_sampling_is_identical_whatever_else_is_batched(text_model: dict) -> None:
    """Long generations (5 contexts) of sequences whose windows fill and restart at different
    steps, batched together: each gives the same ids as alone."""
    generator = _stored_generator(text_model)
    context = generator.context_length
    params = SamplingParams(temperature=1.0, top_p=0.95)
    first = generate(generator, [1, 2, 3], 30, params, seed=7)
    assert first == generate(generator, [1, 2, 3], 30, params, seed=7)
    assert first != generate(generator, [1, 2, 3], 30, params, seed=8)
    prompts = [[1, 2, 3], [4] * 9, [5, 6], list(range(1, context)), list(range(context))]
    seeds = (7, 1, 2, 3, 4)
    new = 5 * context
    rngs = [np.random.default_rng(seed) for seed in seeds]
    logits = np.stack([generator.prefill(p)[0] for p in prompts])
    caches = [generator.prefill(p)[1] for p in prompts]
    produced: list[list[int]] = [[] for _ in prompts]
    fills: set[tuple[int, ...]] = set()
    for step in range(new):
        tokens = [sample(row, params, rng) for row, rng in zip(logits, rngs, strict=True)]
        for out, token in zip(produced, tokens, strict=True):
            out.append(token)
        if step < new - 1:
            fills.add(tuple(cache.length for cache in caches))
            logits, caches = generator.decode(tokens, caches)
    for prompt, seed, out in zip(prompts, seeds, produced, strict=True):
        assert out == generate(generator, prompt, new, params, seed=seed)
    assert produced[0][:30] == first
    # Steps where some caches were full (their windows restarted) while others grew.
    assert any(context in fill and min(fill) < context for fill in fills)


def test_sampling_filters() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 2.0, 1.9, -1.0, 2.0])  # a tie at the top: the first one wins
    greedy = sample(logits, SamplingParams(temperature=0), rng)
    assert greedy == 1
    for params in (SamplingParams(top_k=1), SamplingParams(top_p=1e-6)):
        assert {sample(logits, params, rng) for _ in range(50)} == {greedy}
    top3 = {sample(logits, SamplingParams(top_k=3), rng) for _ in range(300)}
    assert top3 == {1, 2, 4}
    counts = np.bincount([sample(logits, SamplingParams(), rng) for _ in range(4000)], minlength=5)
    expected = np.exp(logits) / np.exp(logits).sum() * 4000
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5)
    cold = np.bincount([sample(logits, SamplingParams(0.1), rng) for _ in range(300)], minlength=5)
    assert cold[[0, 3]].sum() == 0 and cold[2] < 100
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


@pytest.mark.parametrize("temperature", [5e-324, 1e-320, 1e-310])
def test_a_temperature_too_small_to_divide_by_is_greedy(temperature: float) -> None:
    """Issue 20, row 10: 5e-324 divided the logits to inf, then inf - inf = NaN, and the draw
    was garbage; it is greedy, as 0 and 1e-300 are."""
    rng = np.random.default_rng(0)
    logits = np.array([0.5, 3.0, 2.9, -1.0, 1.0])
    draws = {sample(logits, SamplingParams(temperature), rng) for _ in range(50)}
    assert draws == {sample(logits, SamplingParams(0.0), rng)} == {1}
    assert {sample(logits, SamplingParams(1e-300), rng) for _ in range(50)} == {1}


def test_smoke_run_registers_the_generator_with_its_metadata(text_model: dict) -> None:
    assert text_model["task"] == "text-generation"
    assert text_model["headline_metrics"]["val_loss"] == text_model["metrics"]["val_loss"]
    assert text_model["head_dim"] * text_model["heads"] == 32
    assert len(text_model["vocabulary"]) == 80 and text_model["vocabulary"][0] == "\n"
    loaded = load_model(f"text-generator:{text_model['version']}", "cpu")  # warms up
    assert loaded.describe()["inputs"][2]["shape"] == ["batch", "total_sequence"]
    metrics = json.loads((REPORTS / "text-smoke" / "metrics.json").read_text())
    assert metrics["parity"]["greedy_characters_each"] == 200
    assert set(metrics["samples"]) == {"0.5", "1.0"}
    assert (REPORTS / "text-smoke" / "loss_curves.png").stat().st_size > 1000


def test_dry_run_trains_one_step() -> None:
    assert main(["text", "--preset", "smoke", "--dry-run", "--quiet", "--no-register"]) == 0


def test_core_text_generation_does_not_import_torch() -> None:
    code = (
        "import sys, core.text_generation; "
        "bad = [m for m in ('torch', 'training', 'models', 'service') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kv_cache_reports_length_and_bytes() -> None:
    pair = (np.zeros((1, 2, 5, 4), np.float32), np.zeros((1, 2, 5, 4), np.float32))
    cache = KVCache([pair], (1, 2, 3, 4, 5))
    assert cache.length == 5 and cache.nbytes == 2 * 2 * 5 * 4 * 4
