"""Image generation: a conditional GAN on Fashion-MNIST, judged by the served image classifier."""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.image_generation import draw_noise, to_pixels
from models.gan import Discriminator, GANConfig, Generator, parameter_count
from training.areas import TrainingArea
from training.completion import Completion, add_time_guard_argument, guard_reached
from training.export import check_parity, export_onnx
from training.gan.judge import (
    CLASSIFIER,
    Classifier,
    class_consistency,
    generate_pixels,
    judge,
    onnx_generator,
)
from training.image.data import CLASSES, Split, add_data_dir_argument, default_dir, load_splits
from training.loop import progress_bar, seed_everything
from training.precision import add_precision_argument, use_bf16
from training.reports import plot_image_grid, plot_training_curves, report_dir, write_metrics
from training.variants import (
    CLASS_CONSISTENCY,
    Int8Plan,
    build_int8,
    dynamic_int8,
    register_with_variants,
)

MODEL_NAME = "image-generator"
JUDGE_SEED = 20_000  # noise of the judged samples: not the monitor's, not training's
MONITOR_SEED = 10_000
BN_BATCH_SIZE = 500  # batches of the standing batch-norm statistics


@dataclass(frozen=True)
class Preset:
    """Size of a run: training rows (None: all 60,000), epochs, optimiser, judge sample counts."""

    epochs: int
    train_rows: int | None = None
    batch_size: int = 128
    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.999  # generator weights averaged over steps; what gets exported
    samples_per_class: int = 1000  # judge: generated images per class
    real_rows: int = 10_000  # judge: real test images, and as many training images (the floor)
    monitor_per_class: int = 100  # per epoch, class consistency of this many images per class
    standing_batches: int = 20  # batch-norm statistics of the exported generator: x 500 images
    threads: int | None = None  # torch threads while training (None: torch's default)
    model: GANConfig = field(default_factory=GANConfig)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        epochs=4,
        train_rows=4096,
        batch_size=64,
        learning_rate=2e-3,
        betas=(0.0, 0.99),
        ema_decay=0.0,
        samples_per_class=50,
        real_rows=500,
        monitor_per_class=20,
        standing_batches=4,
        threads=1,  # a tiny network: a second thread costs more than it gives on a busy CPU
        model=GANConfig(g_width=32, d_width=16),
    ),
    # 18 epochs of 68-87 s with bf16 on one busy core (21-24 min), about 36 min without bf16;
    # all 18 run however long they take (see the model card).
    "full": Preset(epochs=18, threads=1),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    add_precision_argument(parser, "both networks")
    add_time_guard_argument(parser, "epochs")
    parser.add_argument(
        "--classifier",
        default=CLASSIFIER,
        help=f"stored classifier that judges the generator (default: {CLASSIFIER}; train it "
        "first with `python -m training image`)",
    )


def load_data(args: argparse.Namespace, preset: Preset) -> tuple[Split, Split]:
    """All training images (no hold-out: no epoch is selected) and the test split."""
    train, _, test = load_splits(args.data_dir or default_dir(), 0, args.seed)
    return train.head(preset.train_rows), test


def hinge_losses(
    generator: Generator,
    discriminator: Discriminator,
    images: torch.Tensor,
    class_id: torch.Tensor,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generated images for ``class_id`` and the discriminator's hinge loss on real and those."""
    noise = torch.randn(len(class_id), generator.config.noise_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fake = generator(noise, class_id)
        real_score = discriminator(images, class_id)
        fake_score = discriminator(fake.detach(), class_id)
    loss = torch.relu(1 - real_score).mean() + torch.relu(1 + fake_score).mean()
    return fake, loss, real_score


def train_step(
    models: tuple[Generator, Discriminator],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    batch: tuple[torch.Tensor, torch.Tensor],
    bf16: bool,
) -> tuple[float, float]:
    """One discriminator step, then one generator step on the same generated images."""
    generator, discriminator = models
    g_optimizer, d_optimizer = optimizers
    images, class_id = batch
    fake, d_loss, _ = hinge_losses(generator, discriminator, images, class_id, bf16)
    d_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    d_optimizer.step()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        g_loss = -discriminator(fake, class_id).float().mean()
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()
    g_optimizer.step()
    return d_loss.item(), g_loss.item()


@torch.no_grad()
def update_average(average: nn.Module, live: nn.Module, decay: float, step: int) -> None:
    """Exponential moving average of the weights (warm-up: decay min(d, (1 + t) / (10 + t)))."""
    weight = 1 - min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), weight)


@torch.no_grad()
def standing_batch_norm(generator: Generator, seed: int, batches: int = 20) -> Generator:
    """Reset the batch-norm statistics to their average over ``batches`` batches of random
    classes (the averaged weights never ran in training mode); return it in eval mode."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    generator.train()
    source = torch.Generator().manual_seed(seed)
    config = generator.config
    for _ in range(batches):
        noise = torch.randn(BN_BATCH_SIZE, config.noise_dim, generator=source)
        generator(noise, torch.randint(0, config.n_classes, (BN_BATCH_SIZE,), generator=source))
    for norm in norms:
        norm.momentum = 0.1
    return generator.eval()


def exported_generator(average: Generator, seed: int, batches: int) -> Generator:
    """A copy of the averaged generator with standing statistics, ready to export."""
    return standing_batch_norm(copy.deepcopy(average), seed, batches)


def torch_pixels(generator: Generator, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Served pixels of ``per_class`` images per class from ``draw_noise`` (PyTorch, eval)."""
    config = generator.config
    noise = torch.from_numpy(draw_noise(seed, config.n_classes * per_class, config.noise_dim))
    class_id = torch.arange(config.n_classes).repeat_interleave(per_class)
    with torch.no_grad():
        images = generator(noise, class_id).numpy()
    return to_pixels(images), class_id.numpy()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(
    train: Split, preset: Preset, args: argparse.Namespace, classifier: Classifier | None
) -> tuple[Generator, dict[str, list[float]]]:
    """Adam on both networks, hinge loss, one D step per G step; return the exported
    generator (weight average, standing batch norm) and the per-epoch curves."""
    generator_seed = seed_everything(args.seed)
    generator, discriminator = Generator(preset.model), Discriminator(preset.model)
    average = copy.deepcopy(generator)
    optimizers = tuple(
        torch.optim.Adam(m.parameters(), lr=preset.learning_rate, betas=preset.betas)
        for m in (generator, discriminator)
    )
    images = torch.from_numpy(train.images)
    labels = torch.from_numpy(train.labels)
    steps_per_epoch = len(labels) // preset.batch_size
    epochs, steps_per_epoch = (1, 1) if args.dry_run else (preset.epochs, steps_per_epoch)
    bf16 = use_bf16(args.precision)
    curves: dict[str, list[float]] = {
        "discriminator_loss": [],
        "generator_loss": [],
        "monitor_class_consistency": [],
        "epoch_seconds": [],
    }
    step = 0
    with progress_bar(epochs * steps_per_epoch, "image-gan", args.quiet) as bar:
        fit_started = time.perf_counter()
        for epoch in range(epochs):
            started = time.perf_counter()
            if epoch and guard_reached(args, started - fit_started):
                break
            generator.train()
            order = torch.randperm(len(labels), generator=generator_seed)
            totals = np.zeros(2)
            for index in range(steps_per_epoch):
                rows = order[index * preset.batch_size : (index + 1) * preset.batch_size]
                batch = (images[rows].float() / 255.0, labels[rows])
                totals += train_step((generator, discriminator), optimizers, batch, bf16)
                update_average(average, generator, preset.ema_decay, step)
                step += 1
                bar.update(1)
                bar.set_postfix(
                    d=f"{totals[0] / (index + 1):.3f}", g=f"{totals[1] / (index + 1):.3f}"
                )
            curves["discriminator_loss"].append(round(float(totals[0]) / steps_per_epoch, 4))
            curves["generator_loss"].append(round(float(totals[1]) / steps_per_epoch, 4))
            if classifier is not None:
                monitored = exported_generator(average, MONITOR_SEED, preset.standing_batches)
                pixels, requested = torch_pixels(monitored, preset.monitor_per_class, MONITOR_SEED)
                predicted = classifier.probabilities(pixels).argmax(1)
                share, _ = class_consistency(predicted, requested, preset.model.n_classes)
                curves["monitor_class_consistency"].append(round(share, 4))
            curves["epoch_seconds"].append(round(time.perf_counter() - started, 1))
            if not args.quiet:
                bar.write(
                    f"epoch {epoch + 1}: "
                    + ", ".join(f"{k} {v[-1]}" for k, v in curves.items() if v)
                )
    return exported_generator(average, args.seed, preset.standing_batches), curves


def export_model(generator: Generator, directory: Path, seed: int) -> tuple[Path, float]:
    """Export to ONNX (noise, class_id -> images, dynamic batch); check parity on 256 draws."""
    config = generator.config
    inputs = {
        "noise": torch.from_numpy(draw_noise(seed, 256, config.noise_dim)),
        "class_id": torch.arange(256, dtype=torch.int64) % config.n_classes,
    }
    path = export_onnx(
        generator,
        inputs,
        ["images"],
        directory / "image-generator.onnx",
        {"noise": {0: "batch"}, "class_id": {0: "batch"}},
    )
    return path, check_parity(generator, path, inputs)


def model_metadata(
    metrics: dict, config: GANConfig, completion: Completion, args: argparse.Namespace
) -> dict:
    """What the service and a reader need besides the weights (see training.registry)."""
    return {
        "task": "image-generation",
        "inputs": [
            {"name": "noise", "dtype": "float32", "shape": ["batch", config.noise_dim]},
            {"name": "class_id", "dtype": "int64", "shape": ["batch"]},
        ],
        "outputs": [{"name": "images", "dtype": "float32", "shape": ["batch", 28, 28]}],
        "labels": list(CLASSES),
        "noise_dim": config.noise_dim,
        "noise": "core.image_generation.draw_noise(seed, count, noise_dim): float32 standard "
        "normal rows from np.random.Generator(np.random.PCG64(seed))",
        "postprocessing": {
            "rule": "core.image_generation.to_pixels: uint8 = clip(floor(255 * images + 0.5))",
            "convention": "light on dark",
        },
        "metrics": metrics,
        "headline_metrics": {"class_consistency": metrics["class_consistency"]},
        "training": {
            "area": "gan",
            "preset": args.preset,
            "seed": args.seed,
            **completion.as_metadata(),
        },
    }


def write_report(
    directory: Path, metrics: dict, curves: dict, pixels: np.ndarray, extra: dict, args
) -> None:
    """Sample grid (a row per class) and training curves PNGs, then metrics.json."""
    per_class = metrics["judge"]["samples_per_class"]
    grid = pixels.reshape(len(CLASSES), per_class, 28, 28)[:, :10]
    plot_image_grid(
        directory / "sample_grid.png",
        grid,
        CLASSES,
        f"Generated (judge seed {JUDGE_SEED}), class consistency "
        f"{metrics['class_consistency']:.3f}",
    )
    plotted = {
        "discriminator hinge loss": curves["discriminator_loss"],
        "generator loss": curves["generator_loss"],
    }
    if curves["monitor_class_consistency"]:
        plotted["class consistency (1,000 monitor samples)"] = curves["monitor_class_consistency"]
    plot_training_curves(directory / "training_curves.png", plotted, "loss / share")
    write_metrics(
        directory, {"area": "gan", "preset": args.preset, "seed": args.seed, **metrics, **extra}
    )


def int8_plan(classifier: Classifier, preset: Preset) -> Int8Plan:
    """Dynamic INT8 of the generator, gated on class consistency (the judge's classifier on
    the judge's own noise): the served images must still show the class asked for."""

    def evaluate(path: Path) -> dict[str, float]:
        pixels, requested = generate_pixels(
            onnx_generator(path),
            preset.model.n_classes,
            preset.samples_per_class,
            preset.model.noise_dim,
            JUDGE_SEED,
        )
        predicted = classifier.probabilities(pixels).argmax(axis=1)
        return {
            "class_consistency": class_consistency(predicted, requested, preset.model.n_classes)[0]
        }

    return Int8Plan(
        dynamic_int8(),
        "dynamic",
        "a generator's inputs are noise and a class, not training rows: no calibration set to "
        "fit activation ranges to; dynamic INT8 covers its Gemm and convolutions (ONNX Runtime "
        "has no integer ConvTranspose, so those stay FP32)",
        evaluate,
        (CLASS_CONSISTENCY,),
    )


def run(args: argparse.Namespace) -> str:
    """Train, export, judge (through ONNX Runtime), register and report; return the headline."""
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    train, test = load_data(args, preset)
    classifier = None if args.dry_run else Classifier.load(args.classifier)
    if classifier is not None and classifier.labels != list(CLASSES):
        raise ValueError(f"{args.classifier} has labels {classifier.labels}, not {CLASSES}")
    fit_started = time.perf_counter()
    with torch_threads(preset.threads):
        generator, curves = fit(train, preset, args, classifier)
    training_seconds = time.perf_counter() - fit_started
    summary = (
        f"discriminator loss {curves['discriminator_loss'][-1]:.4f}, "
        f"generator loss {curves['generator_loss'][-1]:.4f}"
    )
    if args.dry_run:
        return summary
    directory = report_dir("gan", args.preset)
    rows = np.random.default_rng(args.seed).permutation(len(train.labels))[: preset.real_rows]
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path, parity = export_model(generator, Path(scratch), args.seed)
        metrics, pixels = judge(
            onnx_generator(onnx_path),
            classifier,
            train.images[rows],
            test.images[: preset.real_rows],
            test.labels[: preset.real_rows],
            per_class=preset.samples_per_class,
            noise_dim=preset.model.noise_dim,
            seed=JUDGE_SEED,
        )
        completion = Completion("epochs", preset.epochs, len(curves["discriminator_loss"]))
        metadata = model_metadata(metrics, preset.model, completion, args)
        int8 = build_int8(onnx_path, int8_plan(classifier, preset), Path(scratch))
        stored, variants = register_with_variants(
            MODEL_NAME, onnx_path, metadata, [int8], args.register
        )
    extra = {
        "preset_config": asdict(preset),
        "parameters": {
            "generator": parameter_count(generator),
            "discriminator": parameter_count(Discriminator(preset.model)),
        },
        "data": {"train": len(train.labels), "test": len(test.labels)},
        **completion.as_metadata(),
        "bf16": use_bf16(args.precision),
        "curves": curves,
        "parity_max_abs_diff": parity,
        "variants": variants,
        "registered": {"name": MODEL_NAME, "version": stored["version"]} if args.register else None,
        "training_seconds": round(training_seconds, 1),
        "duration_seconds": round(time.perf_counter() - started, 1),
    }
    write_report(directory, metrics, curves, pixels, extra, args)
    share = metrics["class_consistency"]
    ratio = metrics["frechet_ratio"]
    return (
        f"class consistency {share:.4f}, Fréchet ratio {ratio}; report in {directory}"
        + completion.summary()
    )


AREA = TrainingArea(
    name="gan",
    models=(MODEL_NAME,),
    presets=PRESETS,
    add_arguments=add_arguments,
    run=run,
    needs=(CLASSIFIER.split(":")[0],),  # the judge reads the stored image classifier
    full_minutes=23,  # on 2 cores; ensure trains the quickest first
)
