"""Export the GPT with an explicit key/value cache to ONNX, and the parity gate that guards it.

``torch.onnx.export(dynamo=True)`` names the dynamic axes itself (``s27``, ...), with a
different name for each past input and no relation between them; ``rename_axes`` gives them
the names ``core.text_generation`` documents (``batch``, ``sequence``, ``past_sequence``,
``total_sequence``), which are also recorded in the model's metadata (``io_schema``).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.export import Dim

from core.text_generation import (
    ATTENTION_MASK,
    BATCH,
    INPUT_IDS,
    LOGITS,
    PAST_SEQUENCE,
    POSITION_IDS,
    SEQUENCE,
    TOTAL_SEQUENCE,
    Recompute,
    TextGenerator,
    generate,
    past_name,
    present_name,
    session_call,
)
from models.gpt import GPT, CachedGPT, GPTConfig
from training.export import OPSET, PARITY_TOLERANCE, ParityError

PARITY_PROMPTS = ("ROMEO\n", "First Citizen\nBefore we proceed any further, hear me speak.\n", "O")
PARITY_CHARACTERS = 200


def cache_names(config: GPTConfig, prefix: str) -> list[str]:
    """Per-layer key and value names in graph order (``past_key_values`` or ``present``)."""
    name = past_name if prefix == "past" else present_name
    return [name(layer, kind) for layer in range(config.layers) for kind in ("key", "value")]


def io_schema(config: GPTConfig) -> tuple[list[dict], list[dict]]:
    """The graph's inputs and outputs: names, dtypes and shapes with symbolic axis names."""
    cache = [BATCH, config.heads, PAST_SEQUENCE, config.head_dim]
    grown = [BATCH, config.heads, TOTAL_SEQUENCE, config.head_dim]
    inputs = [
        {"name": INPUT_IDS, "dtype": "int64", "shape": [BATCH, SEQUENCE]},
        {"name": POSITION_IDS, "dtype": "int64", "shape": [BATCH, SEQUENCE]},
        {"name": ATTENTION_MASK, "dtype": "int64", "shape": [BATCH, TOTAL_SEQUENCE]},
    ] + [{"name": n, "dtype": "float32", "shape": cache} for n in cache_names(config, "past")]
    outputs = [
        {"name": LOGITS, "dtype": "float32", "shape": [BATCH, SEQUENCE, config.vocab_size]}
    ] + [{"name": n, "dtype": "float32", "shape": grown} for n in cache_names(config, "present")]
    return inputs, outputs


def example_inputs(config: GPTConfig, batch: int = 2, steps: int = 3, past: int = 5) -> tuple:
    """Flat tracing inputs (sizes above 1 so that no axis is specialised)."""
    ids = torch.randint(0, config.vocab_size, (batch, steps))
    positions = torch.arange(past, past + steps).expand(batch, steps).contiguous()
    mask = torch.ones(batch, past + steps, dtype=torch.int64)
    shape = (batch, config.heads, past, config.head_dim)
    return (ids, positions, mask, *(torch.randn(shape) for _ in range(2 * config.layers)))


def rename_axes(model: onnx.ModelProto, config: GPTConfig) -> onnx.ModelProto:
    """Give the exporter's generated axis names the documented ones, everywhere in the graph."""
    graph = model.graph
    inputs = {value.name: value for value in graph.input}

    def symbol(name: str, axis: int) -> str:
        return inputs[name].type.tensor_type.shape.dim[axis].dim_param

    mapping = {
        symbol(INPUT_IDS, 0): BATCH,
        symbol(INPUT_IDS, 1): SEQUENCE,
        symbol(ATTENTION_MASK, 1): TOTAL_SEQUENCE,
    }
    for name in cache_names(config, "past"):
        mapping[symbol(name, 2)] = PAST_SEQUENCE
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    schema_inputs, schema_outputs = io_schema(config)
    declared = {spec["name"]: spec["shape"] for spec in schema_inputs + schema_outputs}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if value.name in declared:  # graph inputs and outputs: exactly the schema
                want = declared[value.name][axis]
                if isinstance(want, str):
                    dim.dim_param = want
                elif dim.dim_param or dim.dim_value != want:
                    raise ValueError(f"{value.name} axis {axis}: {dim} is not {want}")
            elif dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)
    return model


def export_cached(gpt: GPT, path: Path) -> Path:
    """Export ``CachedGPT(gpt)`` (one graph for prefill and decode) to ``path`` and rename axes."""
    config = gpt.config
    wrapper = CachedGPT(gpt).eval()
    dynamic = Dim.DYNAMIC
    dynamic_shapes = (
        {0: dynamic, 1: dynamic},
        {0: dynamic, 1: dynamic},
        {0: dynamic, 1: dynamic},
        tuple({0: dynamic, 2: dynamic} for _ in range(2 * config.layers)),
    )
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        torch.onnx.export(
            wrapper,
            example_inputs(config),
            str(path),
            input_names=[INPUT_IDS, POSITION_IDS, ATTENTION_MASK, *cache_names(config, "past")],
            output_names=[LOGITS, *cache_names(config, "present")],
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = rename_axes(onnx.load(str(path)), config)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def torch_recompute(gpt: GPT) -> Recompute:
    """The PyTorch reference with ``TextGenerator``'s interface and windows: every step
    recomputes the whole window with ``GPT.forward`` (no cache), so the parity gate checks
    the cache too."""
    gpt.eval()

    @torch.no_grad()
    def last_logits(ids: list[int]) -> np.ndarray:
        return gpt(torch.tensor([ids]))[0, -1].numpy()

    return Recompute(last_logits, gpt.config.context_length)


def open_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session as the service opens one (all graph optimisations)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_generation_parity(
    gpt: GPT,
    onnx_path: Path,
    metadata: dict,
    prompts: list[list[int]],
    characters: int = PARITY_CHARACTERS,
    tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """The export gate: raises ParityError unless ONNX Runtime (with its cache) matches PyTorch.

    1. Prefill logits of a full-context window: max abs difference within ``tolerance``.
    2. Greedy decoding of ``characters`` new ids from each prompt: the same ids from the
       ONNX cache graph (``core.text_generation.generate``) as from full recomputation in
       PyTorch (across the re-read when the context fills up).
    """
    generator = TextGenerator(session_call(open_session(onnx_path)), metadata)
    window = [i % gpt.config.vocab_size for i in range(gpt.config.context_length)]
    for prompt in prompts:
        window = (window + prompt)[-gpt.config.context_length :]
    reference = torch_recompute(gpt)
    want, _ = reference.prefill(window)
    got, _ = generator.prefill(window)
    worst = float(np.max(np.abs(got - want)))
    if not worst <= tolerance:
        raise ParityError(f"prefill logits: ONNX vs PyTorch max abs diff {worst:.3g}")
    for number, prompt in enumerate(prompts):
        expected = generate(reference, prompt, characters)
        actual = generate(generator, prompt, characters)
        if actual != expected:
            first = next(i for i, (a, b) in enumerate(zip(actual, expected, strict=True)) if a != b)
            raise ParityError(f"greedy decoding of prompt {number} differs at character {first}")
    return {
        "prefill_logits_max_abs_diff": worst,
        "greedy_prompts": len(prompts),
        "greedy_characters_each": characters,
    }
