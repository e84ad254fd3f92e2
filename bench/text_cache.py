"""``python -m bench.text_cache``: decoding with the key/value cache vs recomputing, and batching.

Reads ``text-generator`` from the BentoML model store and runs ONNX Runtime on one thread.

1. Greedy generation of ``--new`` characters (default 1,024, eight times the context) after a
   prompt, in the same run, three ways: with the cache (``core.text_generation.generate``:
   one prefill, then one position per call, and past the context a prefill of the last half
   context each time the cache is full); recomputing the same windows every step (a prefill of
   every id the cached model sees, per character: it must give the same characters); and
   nanoGPT's ``generate``, which crops to the last ``context_length`` ids and recomputes them
   every step. Prints the rates and the cache's speed-up over each (the issue asks at least 4x
   over recomputing).
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
from core.text_generation import (
    CharVocabulary,
    KVCache,
    Recompute,
    TextGenerator,
    crop_to_context,
    generate,
    session_call,
)

PROMPT = "ROMEO\n"
BATCHES = (1, 4, 16)


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
    parser.add_argument("--new", type=int, default=1024, help="characters to generate")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median/best)")
    parser.add_argument("--steps", type=int, default=64, help="batched decode calls per run")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/text_cache.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    metadata, onnx_path = read_stored_model(args.model)
    session, _ = create_session(onnx_path, "cpu", intra_op_threads=args.threads)
    generator = TextGenerator(session_call(session), metadata)
    prompt = CharVocabulary.from_metadata(metadata).encode(PROMPT)
    generate(generator, prompt, 16)  # warm-up

    def last_logits(ids: list[int]) -> np.ndarray:
        return generator.prefill(ids)[0]

    context = generator.context_length
    cached_s, cached_ids = timed_generation(generator, prompt, args.new, args.repeats)
    same_window_s, same_window_ids = timed_generation(
        Recompute(last_logits, context), prompt, args.new, args.repeats
    )
    crop_s, _ = timed_generation(
        Recompute(last_logits, context, crop_to_context), prompt, args.new, args.repeats
    )
    same = cached_ids == same_window_ids
    cached_rate, same_window_rate, crop_rate = (
        args.new / s for s in (cached_s, same_window_s, crop_s)
    )
    print(f"model {metadata['name']}:{metadata['version']}, context {context}, "
          f"{args.threads} ONNX Runtime thread(s), {args.new} new characters")  # fmt: skip
    print(f"with cache                   {cached_rate:10.1f} chars/s")
    print(f"recompute, the same windows  {same_window_rate:10.1f} chars/s "
          f"(cache {cached_rate / same_window_rate:.2f}x; same characters: {same})")  # fmt: skip
    print(f"recompute, nanoGPT's crop    {crop_rate:10.1f} chars/s "
          f"(cache {cached_rate / crop_rate:.2f}x)")  # fmt: skip

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
                "recompute_same_windows_chars_per_s": round(same_window_rate, 1),
                "recompute_nanogpt_crop_chars_per_s": round(crop_rate, 1),
                "speed_up_over_same_windows": round(cached_rate / same_window_rate, 2),
                "speed_up_over_nanogpt_crop": round(cached_rate / crop_rate, 2),
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
