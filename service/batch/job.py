"""One batch job on the local engine: read chunks, validate, score, commit parts, finish.

``prepare`` (validate and encode a chunk), ``BatchAdapter.infer`` (by default the HTTP
service's ONNX Runtime call) and ``to_tables`` (scores and rejects) are the steps both engines
share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.progress import progress_bar
from service import registry
from service.area import BatchAdapter, ReadyModel
from service.batch.adapter import find_adapter
from service.batch.parts import PartStore
from service.batch.pipeline import WriteBehind, read_ahead
from service.batch.readers import InputError, Source, open_source
from service.batch.tensor_adapter import NoTensorInputsError, tensor_adapter
from service.batching import Arrays
from service.config import Settings
from service.errors import TooLargeError
from service.payload_log.replay import ROUTES, V2, is_payload_log

ROW_ID = "row_id"


@dataclass(frozen=True)
class JobConfig:
    """What to score, where, and how (see ``python -m service.batch --help``)."""

    model: str
    input: Path
    output: Path
    batch_size: int | None = None  # None: the adapter's (see ``resolved``)
    resume: bool = False
    id_column: str | None = None
    quiet: bool = False
    column_map: tuple[tuple[str, str], ...] = ()  # (model input column, file column) pairs
    version: str = "latest"  # the stored version to score with
    replay: str = ROUTES  # which records of a payload log input: ROUTES or V2

    def resolved(self, adapter: BatchAdapter) -> JobConfig:
        """This config with the adapter's batch size when none was given; ``InputError`` for
        a CSV output of a model whose fields CSV cannot hold (``BatchAdapter.csv_output``)."""
        if not adapter.csv_output and self.output.suffix.lower() == ".csv":
            raise InputError(
                f"model {adapter.model!r} writes vector columns, which CSV cannot hold: "
                "write a .parquet output"
            )
        return replace(self, batch_size=self.batch_size or adapter.batch_size)

    def file_columns(self, adapter: BatchAdapter) -> list[str]:
        """The input file's columns to read: the model's inputs (under their file names,
        see ``column_map``) and the id column."""
        inputs = self.file_names(adapter.input_columns)
        return [*inputs, *([self.id_column] if self.id_column else [])]

    def file_names(self, model_columns: tuple[str, ...]) -> list[str]:
        """The file's names of model input columns (see ``column_map``)."""
        file_name = dict(self.column_map)
        return [file_name.get(name, name) for name in model_columns]

    def open(self, adapter: BatchAdapter) -> Source:
        """The input, opened to read the columns ``adapter`` needs, in chunks."""
        categorical = self.file_names(adapter.categorical_columns)
        replay = (adapter.model, self.replay, adapter.input_columns)
        return open_source(
            self.input, self.batch_size, self.file_columns(adapter), categorical, replay
        )

    def to_model_columns(self, table: pa.Table) -> pa.Table:
        """``table`` with its mapped file columns renamed to the model's input names."""
        model_name = {file: model for model, file in self.column_map}
        return table.rename_columns([model_name.get(name, name) for name in table.column_names])

    @property
    def rejects(self) -> Path:
        """Rejects beside the output: ``scores.parquet`` -> ``scores.rejects.parquet``."""
        return self.output.with_name(f"{self.output.stem}.rejects{self.output.suffix}")

    @property
    def work_folder(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")


class QuotaError(TooLargeError, InputError):
    """A job passed one of its ``JobLimits`` (413 over HTTP); the message names the limit and
    its setting."""

    def __init__(self, message: str) -> None:
        super().__init__(["body", "file"], message, "job_too_large", summary=message)


class JobCanceled(Exception):
    """The job was asked to stop (``run_local``'s ``stop``); it stopped between two chunks."""


@dataclass(frozen=True)
class JobLimits:
    """Quotas of a job (HTTP jobs: ``DLSERVE_BATCH_MAX_ROWS``, ``DLSERVE_BATCH_MAX_OUTPUT_BYTES``,
    and for a model whose adapter counts tokens ``DLSERVE_BATCH_MAX_TOKENS``); the command line
    has none."""

    max_rows: int
    max_output_bytes: int
    max_tokens: int

    def check(self, rows: int, output_bytes: int, tokens: int = 0) -> None:
        """``QuotaError`` once ``rows`` read, ``output_bytes`` written or ``tokens`` asked for
        pass a limit."""
        if rows > self.max_rows:
            raise QuotaError(
                f"the file has more than {self.max_rows} rows, the most a job may score "
                "(DLSERVE_BATCH_MAX_ROWS)"
            )
        if output_bytes > self.max_output_bytes:
            raise QuotaError(
                f"the job's output passed {self.max_output_bytes} bytes, the most a job may "
                "write (DLSERVE_BATCH_MAX_OUTPUT_BYTES)"
            )
        if tokens > self.max_tokens:
            raise QuotaError(
                f"the file's rows ask for more than {self.max_tokens} tokens (prompt tokens plus "
                "max_tokens, over every row), the most a job may use (DLSERVE_BATCH_MAX_TOKENS)"
            )


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


def load_for_batch(adapter: BatchAdapter, version: str = "latest") -> ReadyModel:
    """The adapter's model (its stored ``version``) as the service would load it (same
    settings, checks, companion)."""
    settings = Settings.from_env()
    spec = registry.area_of(adapter.model).spec_by_name[adapter.model]
    return spec.load(settings.provider, settings.intra_op_threads, version)


def load_job(
    config: JobConfig, model: ReadyModel | None = None
) -> tuple[JobConfig, BatchAdapter, ReadyModel]:
    """The job's config (resolved), adapter and model: the area's adapter of ``config.model``,
    or for a V2 replay the loaded version's graph inputs and outputs (``tensor_adapter``).
    ``model``: the ready model to score with (default: load it as the service would)."""
    if config.replay == V2 and not is_payload_log(config.input):
        raise InputError(f"--replay v2 reads a payload log folder; {config.input} is not one")
    adapter = find_adapter(config.model)
    config = config.resolved(adapter)
    model = model or load_for_batch(adapter, config.version)
    if config.replay == V2:
        try:
            adapter = tensor_adapter(adapter, model)
        except NoTensorInputsError as exc:
            raise InputError(str(exc)) from exc
        config = config.resolved(adapter)
    return config, adapter, model


@dataclass(frozen=True)
class Chunk:
    """Rows ``[index * batch_size, ...)`` validated: ids, valid mask, reasons, graph inputs,
    and the valid rows' output fields known before inference (``BatchAdapter.encode``)."""

    index: int
    ids: pa.Array
    valid: np.ndarray
    reasons: np.ndarray
    inputs: Arrays
    fields: dict[str, np.ndarray]


def prepare(
    adapter: BatchAdapter, ready: ReadyModel, table: pa.Table, index: int, config: JobConfig
) -> Chunk:
    """Validate chunk ``index`` (rows as read from the file) and encode its valid rows."""
    id_column = config.id_column
    if id_column is not None and id_column not in table.column_names:
        raise InputError(f"id column {id_column!r} is not in the input")
    first = index * config.batch_size
    ids = table.column(id_column) if id_column else pa.array(np.arange(first, first + len(table)))
    columns, reasons = adapter.validate(config.to_model_columns(table), ready)
    valid = np.equal(reasons, None)
    if not valid.all():
        columns = {name: values[valid] for name, values in columns.items()}
    inputs, fields = adapter.encode(columns, ready)
    return Chunk(index, ids, valid, reasons, inputs, fields)


def to_tables(
    adapter: BatchAdapter, model: ReadyModel, chunk: Chunk, outputs: Arrays, id_column: str | None
) -> tuple[pa.Table, pa.Table]:
    """``(scored, rejects)``: valid rows' output fields and the rejected rows' reasons.

    ``model_name`` and ``model_version`` are dictionary-encoded (one value each), so a chunk
    costs one byte per row for them rather than two strings.
    """
    id_name = id_column or ROW_ID
    scored_rows = int(chunk.valid.sum())
    everything = scored_rows == len(chunk.valid)
    scored = pa.table(
        {
            id_name: chunk.ids if everything else chunk.ids.filter(pa.array(chunk.valid)),
            **adapter.to_columns(outputs, model),
            **chunk.fields,
            "model_name": constant(model.name, scored_rows),
            "model_version": constant(model.version, scored_rows),
        }
    )
    rejected = ~chunk.valid
    reasons = pa.array(chunk.reasons[rejected], type=pa.string())
    rejects = pa.table({id_name: chunk.ids.filter(pa.array(rejected)), "reason": reasons})
    return scored, rejects


def constant(value: str, rows: int) -> pa.DictionaryArray:
    """``rows`` times ``value``, dictionary-encoded."""
    return pa.DictionaryArray.from_arrays(np.zeros(rows, dtype=np.int8), pa.array([value]))


def dry_run(config: JobConfig) -> str:
    """Score only the first chunk and write nothing; a line saying what it found."""
    config, adapter, model = load_job(config)
    table = next(config.open(adapter).chunks, None)
    if table is None:
        raise InputError(f"input {config.input} has no rows")
    chunk = prepare(adapter, model, table, 0, config)
    outputs = adapter.infer(model, chunk.inputs)
    scored, rejects = to_tables(adapter, model, chunk, outputs, config.id_column)
    return (
        f"dry run {model.name}:{model.version}: first chunk of {table.num_rows} rows, "
        f"{scored.num_rows} scored, {rejects.num_rows} rejected; nothing written"
    )


def open_store(
    config: JobConfig, adapter: BatchAdapter, fingerprint: dict[str, Any], model: ReadyModel
) -> PartStore:
    """The job's part store; ``--resume`` accepts only parts of this very job: same input file,
    batch size, model and version, id column, file column for every model input
    (``--column``), and for a payload log the same kind of replay."""
    inputs = adapter.input_columns
    columns = dict(zip(inputs, config.file_names(inputs), strict=True))
    identity = {
        "input": fingerprint,
        "batch_size": config.batch_size,
        "model": model.name,
        "version": model.version,
        "id_column": config.id_column,
        "columns": columns,
        **({"replay": config.replay} if config.replay != ROUTES else {}),
    }
    return PartStore(config.work_folder, identity, config.resume, (config.output, config.rejects))


def run_local(
    config: JobConfig,
    model: ReadyModel | None = None,
    limits: JobLimits | None = None,
    stop: Callable[[], bool] | None = None,
) -> Summary:
    """Score ``config.input`` into ``config.output`` chunk by chunk, resumable.

    ``model``: the ready model to score with (the HTTP service's own session; default: load
    it as the service would). ``limits``: quotas, checked as chunks are read and committed
    (``QuotaError``; tokens counted by the adapter's ``tokens``). ``stop``: asked before each
    chunk's inference; ``True`` ends the job with ``JobCanceled`` (the committed parts stay).
    Three stages overlap: reading and validating (read-ahead thread), ONNX Runtime (this
    thread), building and committing the output tables (write-behind thread).
    """
    started = time.perf_counter()
    config, adapter, model = load_job(config, model)
    source = config.open(adapter)
    store = open_store(config, adapter, source.fingerprint, model)

    def prepared() -> Iterator[tuple[int, Chunk | None]]:
        rows = tokens = 0
        for index, table in enumerate(source.chunks):
            rows += table.num_rows
            if limits is not None:
                limits.check(rows, store.bytes_written)
            if store.done(index):
                yield table.num_rows, None
                continue
            chunk = prepare(adapter, model, table, index, config)
            if limits is not None and adapter.tokens is not None:
                tokens += adapter.tokens(chunk.inputs)
                limits.check(rows, store.bytes_written, tokens)
            yield table.num_rows, chunk

    def commit(chunk: Chunk, outputs: Arrays) -> None:
        store.commit(chunk.index, *to_tables(adapter, model, chunk, outputs, config.id_column))
        if limits is not None:
            limits.check(0, store.bytes_written)

    bar = progress_bar(source.rows, f"batch {model.name}", config.quiet, unit="row")
    done = 0
    with bar, WriteBehind() as writer:
        for rows, chunk in read_ahead(prepared()):
            if stop is not None and stop():
                raise JobCanceled(f"the job was canceled after {done} rows")
            if chunk is not None:
                writer.submit(commit, chunk, adapter.infer(model, chunk.inputs))
            bar.update(rows)
            done += rows
    return close_job(config, store, model, started)


def close_job(config: JobConfig, store: PartStore, model: ReadyModel, started: float) -> Summary:
    """Write the final files from a store holding every chunk; the job's summary."""
    scored, rejected = store.totals()
    if scored + rejected == 0:
        raise InputError(f"input {config.input} has no rows")
    store.finish()
    seconds = time.perf_counter() - started
    return Summary(model.name, model.version, scored, rejected, seconds, config)
