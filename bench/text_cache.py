"""``python -m bench.text_cache``: decoding with the key/value cache vs recomputing, and batching.

Reads ``text-generator`` from the BentoML model store and runs ONNX Runtime on one thread.

1. Greedy generation of ``--new`` characters after a prompt, in the same run: with the cache
   (``core.text_generation.generate``: one prefill, then one position per call) and by
   recomputing the whole window every step (a prefill of all positions so far per character,
   the same window rule). Both must produce the same characters; prints both rates and the
   ratio.
2. Batched decode (``TextGenerator.decode``) at batch 1, 4 and 16, prompts of different
   lengths: aggregate new tokens per second and the ratio to batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from core.model_store import read_stored_model
from core.runtime import create_session
from core.text_generation import CharVocabulary, KVCache, TextGenerator, generate

PROMPT = "ROMEO\n"
BATCHES = (1, 4, 16)


class Recompute:
    """``TextGenerator``'s interface without a cache: every step prefills the whole window."""

    def __init__(self, generator: TextGenerator) -> None:
        self.generator = generator
        self.context_length = generator.context_length

    def prefill(self, prompt_ids: list[int]) -> tuple[np.ndarray, _Ids]:
        logits, _ = self.generator.prefill(prompt_ids)
        return logits, _Ids(list(prompt_ids))

    def decode(self, tokens: list[int], caches: list[_Ids]) -> tuple[np.ndarray, list[_Ids]]:
        (token,), (window,) = tokens, caches
        logits, grown = self.prefill([*window.ids, token])
        return logits[None], [grown]


class _Ids:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    @property
    def length(self) -> int:
        return len(self.ids)


def timed_generation(decoder: object, prompt: list[int], new: int, repeats: int) -> tuple:
    """Median seconds of ``repeats`` greedy generations of ``new`` ids, and the ids."""
    seconds, ids = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        ids = generate(decoder, prompt, new)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), ids


def batched_rate(generator: TextGenerator, batch: int, steps: int, repeats: int) -> float:
    """New tokens per second over ``steps`` batched decode calls (prompts of unequal lengths)."""
    rng = np.random.default_rng(0)
    spread = max(1, generator.context_length // 4)
    prompts = [
        rng.integers(0, generator.vocab_size, 1 + (7 * i) % spread).tolist() for i in range(batch)
    ]
    steps = min(steps, generator.context_length - max(map(len, prompts)))
    best = 0.0
    for _ in range(repeats):
        caches: list[KVCache] = [generator.prefill(p)[1] for p in prompts]
        tokens = [p[-1] for p in prompts]
        started = time.perf_counter()
        for _ in range(steps):
            logits, caches = generator.decode(tokens, caches)
            tokens = logits.argmax(axis=1).tolist()
        best = max(best, batch * steps / (time.perf_counter() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text_cache", description=__doc__)
    parser.add_argument("--model", default="text-generator:latest", help="model store tag")
    parser.add_argument("--new", type=int, default=256, help="characters to generate")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median/best)")
    parser.add_argument("--steps", type=int, default=64, help="batched decode calls per run")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/text_cache.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    metadata, onnx_path = read_stored_model(args.model)
    session, _ = create_session(onnx_path, "cpu", intra_op_threads=args.threads)
    generator = TextGenerator(session, metadata)
    prompt = CharVocabulary.from_metadata(metadata).encode(PROMPT)
    generate(generator, prompt, 16)  # warm-up

    cached_s, cached_ids = timed_generation(generator, prompt, args.new, args.repeats)
    recompute_s, recompute_ids = timed_generation(
        Recompute(generator), prompt, args.new, args.repeats
    )
    same = cached_ids == recompute_ids
    cached_rate, recompute_rate = args.new / cached_s, args.new / recompute_s
    print(f"model {metadata['name']}:{metadata['version']}, context {generator.context_length}, "
          f"{args.threads} ONNX Runtime thread(s), {args.new} new characters")  # fmt: skip
    print(f"with cache      {cached_rate:10.1f} chars/s")
    print(f"recompute       {recompute_rate:10.1f} chars/s")
    print(f"speed-up        {cached_rate / recompute_rate:10.2f}x (same characters: {same})")

    rates = {batch: batched_rate(generator, batch, args.steps, args.repeats) for batch in BATCHES}
    for batch, rate in rates.items():
        print(
            f"batched decode  batch {batch:2d}: {rate:9.1f} tokens/s "
            f"({rate / rates[1]:.2f}x batch 1's aggregate rate)"
        )
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": f"{metadata['name']}:{metadata['version']}",
                "threads": args.threads,
                "new_characters": args.new,
                "cached_chars_per_s": round(cached_rate, 1),
                "recompute_chars_per_s": round(recompute_rate, 1),
                "speed_up": round(cached_rate / recompute_rate, 2),
                "same_characters": same,
                "batched_tokens_per_s": {str(b): round(r, 1) for b, r in rates.items()},
                "batched_ratio_to_batch_1": {
                    str(b): round(r / rates[1], 2) for b, r in rates.items()
                },
                "load_average_before_after": [load_before[0], load_after[0]],
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
