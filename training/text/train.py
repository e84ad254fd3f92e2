"""Text generation: a character-level GPT on Shakespeare's plays, exported with a KV cache."""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from core.text_generation import (
    ATTENTION_MASK,
    BATCH,
    INPUT_IDS,
    LOGITS,
    PAST_SEQUENCE,
    POSITION_IDS,
    SEQUENCE,
    TOTAL_SEQUENCE,
    SamplingParams,
    TextGenerator,
    generate,
    log_softmax,
    session_call,
    window_after_full,
)
from models.gpt import GPT, GPTConfig
from training.areas import TrainingArea
from training.completion import Completion, add_time_guard_argument, guard_reached
from training.loop import progress_bar, seed_everything
from training.precision import add_precision_argument, use_bf16
from training.reports import report_dir, write_metrics
from training.text.data import SOURCE, Corpus, load_text, split_text
from training.text.export import (
    cache_names,
    check_generation_parity,
    export_cached,
    io_schema,
    open_session,
)
from training.variants import VAL_LOSS, Int8Plan, build_int8, dynamic_int8, register_with_variants

MODEL_NAME = "text-generator"
SAMPLE_PROMPT = "ROMEO\n"
SAMPLE_CHARACTERS = 400
SAMPLE_TEMPERATURES = (0.5, 1.0)


@dataclass(frozen=True)
class Preset:
    """Network size and optimisation; training runs ``max_steps`` steps on any machine.

    The learning rate warms up linearly, then follows a cosine down to ``min_learning_rate``
    over steps done / ``max_steps``: the same seed gives the same model however fast the
    machine (only ``--time-guard`` cuts a run short, and marks it under-trained).
    """

    model: GPTConfig
    max_steps: int
    batch_size: int = 64
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 200
    eval_windows: int = 256  # validation windows scored at each interval (a fixed subset, bf16)
    final_eval_windows: int | None = None  # None: the whole validation text


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        model=GPTConfig(context_length=32, layers=2, heads=2, width=32),
        max_steps=30,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=5,
        eval_interval=10,
        eval_windows=16,
        final_eval_windows=64,
    ),
    "full": Preset(
        model=GPTConfig(context_length=128, layers=4, heads=8, width=256),
        # about 27 min on 2 cores with bf16 (4,452 steps took 1,620 s), 38 min without
        max_steps=4_400,
        batch_size=32,
        learning_rate=3e-3,
        warmup_steps=100,
        eval_windows=128,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_precision_argument(parser, "the matrix products")
    add_time_guard_argument(parser, "steps")


def batches(ids: torch.Tensor, context: int, size: int, generator: torch.Generator):
    """Endless random windows: inputs and next-character targets, each ``[size, context]``."""
    offsets = torch.arange(context + 1)
    while True:
        starts = torch.randint(0, len(ids) - context - 1, (size, 1), generator=generator)
        windows = ids[starts + offsets]
        yield windows[:, :-1], windows[:, 1:]


def loss_windows(ids: np.ndarray, context: int, windows: int | None) -> tuple[np.ndarray, ...]:
    """Consecutive non-overlapping windows of ``ids``: inputs and next-character targets, each
    ``[count, context]`` int64. ``windows`` None: every whole window; else the first ones."""
    count = (len(ids) - 1) // context
    count = count if windows is None else min(count, windows)
    data = np.ascontiguousarray(ids[: count * context + 1], dtype=np.int64)
    return data[:-1].reshape(count, context), data[1:].reshape(count, context)


@torch.no_grad()
def mean_loss(
    gpt: GPT, ids: np.ndarray, windows: int | None, batch_size: int = 64, bf16: bool = False
) -> float:
    """Mean next-character loss (nats) over consecutive non-overlapping context windows
    (``loss_windows``).

    ``windows`` None: every window of ``ids``; else the first ``windows`` ones. ``bf16``
    (the curves during training only): matrix products under bfloat16 autocast.
    """
    gpt.eval()
    inputs, targets = map(torch.from_numpy, loss_windows(ids, gpt.config.context_length, windows))
    count, context = inputs.shape
    total = 0.0
    for start in range(0, count, batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = gpt(inputs[start : start + batch_size]).float()
        chunk = targets[start : start + batch_size]
        total += F.cross_entropy(logits.flatten(0, 1), chunk.flatten(), reduction="sum").item()
    gpt.train()
    return total / (count * context)


def onnx_mean_loss(
    path: Path,
    config: GPTConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int = 64,
    threads: int = 1,
) -> float:
    """``mean_loss`` of an exported cache graph, run by ONNX Runtime (``open_session``): each
    call is a prefill of ``batch_size`` whole windows at once (positions 0 onwards, every
    position attended, an empty past), and every position's logits are scored (float64)."""
    session = open_session(path, threads)
    past = cache_names(config, "past")
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        ids = inputs[start : start + batch_size]
        count, steps = ids.shape
        empty = np.zeros((count, config.heads, 0, config.head_dim), dtype=np.float32)
        feeds = {
            INPUT_IDS: ids,
            POSITION_IDS: np.tile(np.arange(steps, dtype=np.int64), (count, 1)),
            ATTENTION_MASK: np.ones((count, steps), dtype=np.int64),
        } | dict.fromkeys(past, empty)
        (logits,) = session.run([LOGITS], feeds)
        chosen = targets[start : start + batch_size, :, None]
        total -= float(np.take_along_axis(log_softmax(logits), chosen, -1).sum())
    return total / targets.size


INT8_WHY = (
    "MatMul-heavy decoder: dynamic INT8 weights for the blocks' weight MatMuls (attention "
    "projections, MLP), activations quantized per call; attention's activation-by-activation "
    "MatMuls and the cache stay FP32, and so does the output layer where the exporter leaves "
    "its transpose of the tied embedding in the graph (full preset); no calibration set "
    "would fit every cache length"
)


def int8_plan(
    config: GPTConfig, validation: np.ndarray, windows: int | None, threads: int = 1
) -> Int8Plan:
    """Dynamic INT8 of the cache graph's MatMul/Gemm weights, gated on the validation loss of
    the graph itself: the same windows as the report's ``val_loss`` (``loss_windows``, the
    preset's ``final_eval_windows``), each fed as one prefill, the FP32 graph and the variant
    scored by the same function (``onnx_mean_loss``)."""
    inputs, targets = loss_windows(validation, config.context_length, windows)

    def evaluate(path: Path) -> dict[str, float]:
        return {"val_loss": onnx_mean_loss(path, config, inputs, targets, threads=threads)}

    return Int8Plan(dynamic_int8(("MatMul", "Gemm")), "dynamic", INT8_WHY, evaluate, (VAL_LOSS,))


def learning_rate(preset: Preset, step: int, progress: float) -> float:
    if step < preset.warmup_steps:
        return preset.learning_rate * (step + 1) / preset.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return preset.min_learning_rate + cosine * (preset.learning_rate - preset.min_learning_rate)


def fit(corpus: Corpus, preset: Preset, args: argparse.Namespace) -> tuple[GPT, dict]:
    """AdamW on random windows for ``max_steps`` (or until ``--time-guard``); returns curves
    too, with the run's ``Completion``."""
    generator = seed_everything(args.seed)
    config = replace(preset.model, vocab_size=len(corpus.vocabulary))
    gpt = GPT(config)
    decay = [p for p in gpt.parameters() if p.dim() >= 2]
    other = [p for p in gpt.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": preset.weight_decay}, {"params": other}],
        lr=preset.learning_rate,
        betas=(0.9, preset.beta2),
        weight_decay=0.0,
        fused=True,
    )
    bf16 = use_bf16(args.precision)
    max_steps = 1 if args.dry_run else preset.max_steps
    stream = batches(
        torch.from_numpy(corpus.train), config.context_length, preset.batch_size, generator
    )
    curves: dict[str, list[float]] = {"step": [], "seconds": [], "train_loss": [], "val_loss": []}
    running, counted, step = 0.0, 0, 0
    started = time.perf_counter()
    gpt.train()
    with progress_bar(None, "text-gpt", args.quiet) as bar:
        while True:
            if step >= max_steps or (step and guard_reached(args, time.perf_counter() - started)):
                break
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(preset, step, step / max_steps)
            inputs, targets = next(stream)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = gpt(inputs)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), preset.grad_clip)
            optimizer.step()
            step += 1
            running, counted = running + loss.item(), counted + 1
            bar.update(1)
            if step % preset.eval_interval == 0:
                validation = mean_loss(gpt, corpus.validation, preset.eval_windows, bf16=bf16)
                curves["step"].append(step)
                curves["seconds"].append(round(time.perf_counter() - started, 1))
                curves["train_loss"].append(running / counted)
                curves["val_loss"].append(validation)
                running, counted = 0.0, 0
                bar.set_postfix(train=f"{curves['train_loss'][-1]:.3f}", val=f"{validation:.3f}")
    curves["steps_done"] = step
    curves["completion"] = Completion("steps", max_steps, step)
    curves["training_seconds"] = round(time.perf_counter() - started, 1)
    curves["bf16"] = bf16
    gpt.eval()
    return gpt, curves


def model_metadata(
    config: GPTConfig,
    corpus: Corpus,
    metrics: dict,
    completion: Completion,
    args: argparse.Namespace,
) -> dict:
    """What the service needs besides the weights (see training.registry and core)."""
    inputs, outputs = io_schema(config)
    return {
        "task": "text-generation",
        "inputs": inputs,
        "outputs": outputs,
        "axes": {
            BATCH: "sequences in the call",
            SEQUENCE: "new positions in the call (the prompt in a prefill, 1 in a decode)",
            PAST_SEQUENCE: "cached positions (longest in the batch; shorter ones left-padded)",
            TOTAL_SEQUENCE: f"{PAST_SEQUENCE} + {SEQUENCE}",
        },
        "warm_up_axes": {PAST_SEQUENCE: 0},  # a one-character prefill (core.model_store)
        "vocabulary": list(corpus.vocabulary.chars),
        "context_length": config.context_length,
        "layers": config.layers,
        "heads": config.heads,
        "head_dim": config.head_dim,
        "window_after_full": window_after_full(config.context_length),
        "labels": [],
        "metrics": metrics,
        "headline_metrics": {"val_loss": metrics["val_loss"]},
        "training": {
            "area": "text",
            "preset": args.preset,
            "seed": args.seed,
            "data": SOURCE,
            **completion.as_metadata(),
        },
    }


def samples(generator: TextGenerator, corpus: Corpus, seed: int) -> dict[str, str]:
    """``SAMPLE_CHARACTERS`` characters after ``SAMPLE_PROMPT`` at each sample temperature."""
    vocabulary = corpus.vocabulary
    prompt = vocabulary.encode(SAMPLE_PROMPT)
    return {
        str(t): SAMPLE_PROMPT
        + vocabulary.decode(
            generate(generator, prompt, SAMPLE_CHARACTERS, SamplingParams(temperature=t), seed)
        )
        for t in SAMPLE_TEMPERATURES
    }


def plot_curves(path: Path, curves: dict) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.plot(curves["step"], curves["train_loss"], label="train (mean since last point)")
    axis.plot(curves["step"], curves["val_loss"], label="validation (fixed subset)")
    axis.set(xlabel="step", ylabel="loss (nats per character)", title="Training curves")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run(args: argparse.Namespace) -> str:
    """Train, evaluate, export (parity-gated), make the INT8 variant and gate it, register
    (the variant first when it passed) and report; return the headline."""
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    corpus = split_text(load_text())
    gpt, curves = fit(corpus, preset, args)
    if args.dry_run:
        return f"one step, {gpt.parameter_count():,} parameters"
    evaluation_started = time.perf_counter()
    metrics = {
        "val_loss": round(mean_loss(gpt, corpus.validation, preset.final_eval_windows), 4),
        "train_loss_sample": round(mean_loss(gpt, corpus.train, 128), 4),  # first 16k chars
    }
    evaluation_seconds = time.perf_counter() - evaluation_started
    config = gpt.config
    directory = report_dir("text", args.preset)
    with tempfile.TemporaryDirectory() as scratch:
        export_started = time.perf_counter()
        onnx_path = export_cached(gpt, Path(scratch) / "text-generator.onnx")
        metadata = model_metadata(config, corpus, metrics, curves["completion"], args)
        prompts = [corpus.vocabulary.encode(p) for p in ("ROMEO\n", "KING LEAR\nO", "Enter ")]
        parity = check_generation_parity(gpt, onnx_path, metadata, prompts)
        export_seconds = time.perf_counter() - export_started
        generated = samples(
            TextGenerator(session_call(open_session(onnx_path)), metadata), corpus, args.seed
        )
        plan = int8_plan(
            config, corpus.validation, preset.final_eval_windows, torch.get_num_threads()
        )
        int8 = build_int8(onnx_path, plan, Path(scratch))
        stored, variants = register_with_variants(
            MODEL_NAME, onnx_path, metadata, [int8], args.register
        )
    plot_curves(directory / "loss_curves.png", curves)
    write_metrics(
        directory,
        {
            "area": "text",
            "preset": args.preset,
            "seed": args.seed,
            **metrics,
            "parameters": gpt.parameter_count(),
            "context_length": config.context_length,
            "model_config": asdict(config),
            "preset_config": {k: v for k, v in asdict(preset).items() if k != "model"},
            "data": {
                "source": SOURCE,
                "characters": corpus.characters,
                "train_characters": len(corpus.train),
                "validation_characters": len(corpus.validation),
                "validation_dropped": corpus.validation_dropped,
                "vocabulary_size": len(corpus.vocabulary),
            },
            "training_seconds": curves["training_seconds"],
            "steps": curves["steps_done"],
            **curves["completion"].as_metadata(),
            "bf16": curves["bf16"],
            "evaluation_seconds": round(evaluation_seconds, 1),
            "export_and_parity_seconds": round(export_seconds, 1),
            "parity": parity,
            "samples": generated,
            "variants": variants,
            "curves": {k: curves[k] for k in ("step", "seconds", "train_loss", "val_loss")},
            "registered": (
                {"name": MODEL_NAME, "version": stored["version"]} if args.register else None
            ),
            "duration_seconds": round(time.perf_counter() - started, 1),
        },
    )
    return (
        f"val_loss {metrics['val_loss']:.4f} after {curves['steps_done']} steps "
        f"({curves['training_seconds']:.0f}s); report in {directory}"
        + curves["completion"].summary()
    )


AREA = TrainingArea(
    name="text",
    models=(MODEL_NAME,),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    full_minutes=29,  # on 2 cores; ensure trains the quickest first
)
