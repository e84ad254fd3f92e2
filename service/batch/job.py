"""One batch job on the local engine: read chunks, validate, score, commit parts, finish.

``prepare`` (validate and encode a chunk), ``LoadedModel.run`` (the HTTP service's ONNX
Runtime call) and ``to_tables`` (scores and rejects) are the steps both engines share.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from service.batch.adapter import BatchAdapter, find_adapter
from service.batch.parts import PartStore
from service.batch.pipeline import WriteBehind, read_ahead
from service.batch.readers import InputError, open_source
from service.batching import Arrays
from service.config import Settings
from service.model_store import LoadedModel, load_model
from service.progress import progress_bar

ROW_ID = "row_id"


@dataclass(frozen=True)
class JobConfig:
    """What to score, where, and how (see ``python -m service.batch --help``)."""

    model: str
    input: Path
    output: Path
    batch_size: int = 8192
    resume: bool = False
    id_column: str | None = None
    quiet: bool = False

    @property
    def rejects(self) -> Path:
        """Rejects beside the output: ``scores.parquet`` -> ``scores.rejects.parquet``."""
        return self.output.with_name(f"{self.output.stem}.rejects{self.output.suffix}")

    @property
    def work_folder(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")


@dataclass(frozen=True)
class Summary:
    """What a finished job did; ``line`` is the closing summary."""

    model: str
    version: str
    scored: int
    rejected: int
    seconds: float
    config: JobConfig

    @property
    def line(self) -> str:
        rows = self.scored + self.rejected
        rate = rows / max(self.seconds, 1e-9)
        return (
            f"batch {self.model}:{self.version}: {rows} rows, {self.scored} scored, "
            f"{self.rejected} rejected in {self.seconds:.1f}s ({rate:,.0f} rows/s); "
            f"output {self.config.output}, rejects {self.config.rejects}"
        )


def load_for_batch(adapter: BatchAdapter) -> LoadedModel:
    """The adapter's model as the service would load it (same settings, same checks)."""
    settings = Settings.from_env()
    model = load_model(adapter.spec.tag, settings.provider, settings.intra_op_threads)
    if adapter.spec.check is not None:
        adapter.spec.check(model.metadata)
    return model


@dataclass(frozen=True)
class Chunk:
    """Rows ``[index * batch_size, ...)`` validated: ids, valid mask, reasons, graph inputs."""

    index: int
    ids: pa.Array
    valid: np.ndarray
    reasons: np.ndarray
    inputs: Arrays


def prepare(
    adapter: BatchAdapter, table: pa.Table, index: int, batch_size: int, id_column: str | None
) -> Chunk:
    """Validate chunk ``index`` and encode its valid rows as the graph's inputs."""
    if id_column is not None and id_column not in table.column_names:
        raise InputError(f"id column {id_column!r} is not in the input")
    first = index * batch_size
    ids = table.column(id_column) if id_column else pa.array(np.arange(first, first + len(table)))
    columns, reasons = adapter.validate(table)
    valid = np.equal(reasons, None)
    inputs = adapter.to_arrays({name: values[valid] for name, values in columns.items()})
    return Chunk(index, ids, valid, reasons, inputs)


def to_tables(
    adapter: BatchAdapter, model: LoadedModel, chunk: Chunk, outputs: Arrays, id_column: str | None
) -> tuple[pa.Table, pa.Table]:
    """``(scored, rejects)``: valid rows' output fields and the rejected rows' reasons."""
    id_name = id_column or ROW_ID
    scored_rows = int(chunk.valid.sum())
    scored = pa.table(
        {
            id_name: chunk.ids.filter(pa.array(chunk.valid)),
            **adapter.to_columns(outputs, model.metadata),
            "model_name": pa.repeat(model.name, scored_rows),
            "model_version": pa.repeat(model.version, scored_rows),
        }
    )
    reasons = pa.array(chunk.reasons[~chunk.valid], type=pa.string())
    rejects = pa.table({id_name: chunk.ids.filter(pa.array(~chunk.valid)), "reason": reasons})
    return scored, rejects


def dry_run(config: JobConfig) -> str:
    """Score only the first chunk and write nothing; a line saying what it found."""
    adapter = find_adapter(config.model)
    model = load_for_batch(adapter)
    columns = [*adapter.input_columns, *([config.id_column] if config.id_column else [])]
    table = next(open_source(config.input, config.batch_size, columns).chunks, None)
    if table is None:
        raise InputError(f"input {config.input} has no rows")
    chunk = prepare(adapter, table, 0, config.batch_size, config.id_column)
    scored, rejects = to_tables(adapter, model, chunk, model.run(chunk.inputs), config.id_column)
    return (
        f"dry run {model.name}:{model.version}: first chunk of {table.num_rows} rows, "
        f"{scored.num_rows} scored, {rejects.num_rows} rejected; nothing written"
    )


def open_store(config: JobConfig, fingerprint: dict[str, Any], model: LoadedModel) -> PartStore:
    """The job's part store; ``--resume`` accepts only parts of this very job."""
    identity = {
        "input": fingerprint,
        "batch_size": config.batch_size,
        "model": model.name,
        "version": model.version,
        "id_column": config.id_column,
    }
    return PartStore(config.work_folder, identity, config.resume, (config.output, config.rejects))


def run_local(config: JobConfig) -> Summary:
    """Score ``config.input`` into ``config.output`` chunk by chunk, resumable.

    Three stages overlap: reading and validating (read-ahead thread), ONNX Runtime (this
    thread), building and committing the output tables (write-behind thread).
    """
    started = time.perf_counter()
    adapter = find_adapter(config.model)
    model = load_for_batch(adapter)
    columns = [*adapter.input_columns, *([config.id_column] if config.id_column else [])]
    source = open_source(config.input, config.batch_size, columns)
    store = open_store(config, source.fingerprint, model)

    def prepared() -> Iterator[tuple[int, Chunk | None]]:
        for index, table in enumerate(source.chunks):
            if store.done(index):
                yield table.num_rows, None
            else:
                yield (
                    table.num_rows,
                    prepare(adapter, table, index, config.batch_size, config.id_column),
                )

    def commit(chunk: Chunk, outputs: Arrays) -> None:
        store.commit(chunk.index, *to_tables(adapter, model, chunk, outputs, config.id_column))

    bar = progress_bar(source.rows, f"batch {model.name}", config.quiet, unit="row")
    with bar, WriteBehind() as writer:
        for rows, chunk in read_ahead(prepared()):
            if chunk is not None:
                writer.submit(commit, chunk, model.run(chunk.inputs))
            bar.update(rows)
    return close_job(config, store, model, started)


def close_job(config: JobConfig, store: PartStore, model: LoadedModel, started: float) -> Summary:
    """Write the final files from a store holding every chunk; the job's summary."""
    scored, rejected = store.totals()
    if scored + rejected == 0:
        raise InputError(f"input {config.input} has no rows")
    store.finish()
    seconds = time.perf_counter() - started
    return Summary(model.name, model.version, scored, rejected, seconds, config)
