"""``--engine ray``: the same job on Ray Data, one ONNX Runtime session per actor.

The driver lists the chunks still to do (the manifest makes it resumable, as on the local
engine) and hands their indices to ``map_batches`` over a pool of ``ChunkScorer`` actors. Each
actor loads the model once, reads its chunks' rows straight from the Parquet file (only the
row groups that hold them), runs the shared ``prepare`` / ``BatchAdapter.infer`` / ``to_tables``
steps and puts the part files in place; the driver then records each chunk in the manifest and
finally writes the output files. Parquet input only (the actors need random access by row),
or a payload log folder: the driver reads the replay's rows (``--replay``, as the local
engine) and writes them as one Parquet file in the work folder, which the actors read. The
part folder must be on storage every actor and the driver share.

Without ``--ray-address`` a local Ray is started bound to 127.0.0.1 with no dashboard.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.progress import progress_bar
from service.batch.job import (
    JobConfig,
    Summary,
    close_job,
    load_job,
    open_store,
    prepare,
    to_tables,
)
from service.batch.parts import write_parts
from service.batch.readers import InputError, input_format, open_source, parquet_rows
from service.payload_log.replay import is_payload_log

PAYLOAD_ROWS = "payload-rows.parquet"  # a payload log's replayed rows, in the work folder
SPAN_ROWS = 131_072  # rows one actor call reads at once: about one Parquet row group
PASSED_ENV = ("BENTOML_", "DLSERVE_")


class ChunkScorer:
    """A Ray Data actor: one loaded model, scoring chunks of one input into part files."""

    def __init__(self, config: JobConfig, rows_file: Path) -> None:
        self.config, self.adapter, self.model = load_job(config)
        self.rows_file = rows_file
        self.columns = config.file_columns(self.adapter)
        self.categorical = config.file_names(self.adapter.categorical_columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score the chunks whose indices are in ``batch["index"]``; return their counts."""
        size, indices = self.config.batch_size, [int(i) for i in batch["index"]]
        first = min(indices)
        rows = parquet_rows(
            self.rows_file,
            first * size,
            (max(indices) + 1) * size,
            self.columns,
            self.categorical,
        )
        counts = []
        for index in indices:
            table = rows.slice((index - first) * size, size)
            chunk = prepare(self.adapter, self.model, table, index, self.config)
            outputs = self.adapter.infer(self.model, chunk.inputs)
            scored, rejects = to_tables(
                self.adapter, self.model, chunk, outputs, self.config.id_column
            )
            write_parts(self.config.work_folder, index, scored, rejects)
            counts.append((index, scored.num_rows, rejects.num_rows))
        index, scored, rejected = (np.array(column) for column in zip(*counts, strict=True))
        return {"index": index, "scored": scored, "rejected": rejected}


def start_ray(address: str | None) -> bool:
    """Join ``address`` or start a private local Ray; True when this process started it."""
    import ray

    env = {key: value for key, value in os.environ.items() if key.startswith(PASSED_ENV)}
    runtime_env: dict[str, Any] = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        return False
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        runtime_env=runtime_env,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def run_ray(config: JobConfig, address: str | None, actors: int | None = None) -> Summary:
    """Run ``config`` on Ray Data; same parts, manifest and final files as the local engine."""
    import ray

    started = time.perf_counter()
    replaying = is_payload_log(config.input)
    if not replaying and input_format(config.input) != "parquet":
        raise InputError(
            "the Ray engine reads Parquet or a payload log only; use --engine local for CSV/JSONL"
        )
    config, adapter, model = load_job(config)
    source = config.open(adapter) if replaying else open_source(config.input, config.batch_size, [])
    store = open_store(config, adapter, source.fingerprint, model)
    rows_file = config.input
    if replaying:
        rows_file = config.work_folder / PAYLOAD_ROWS
        if not source.rows:
            raise InputError(f"input {config.input} has no rows")
        pq.write_table(pa.concat_tables(source.chunks), rows_file)
    total = pq.ParquetFile(rows_file).metadata.num_rows
    todo = [i for i in range(math.ceil(total / config.batch_size)) if not store.done(i)]
    config = JobConfig(
        **{**config.__dict__, "input": config.input.resolve(), "output": config.output.resolve()}
    )
    owned = start_ray(address)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
        scored = ray.data.from_items([{"index": i} for i in todo]).map_batches(
            ChunkScorer,
            fn_constructor_args=(config, rows_file.resolve()),
            batch_size=max(1, SPAN_ROWS // config.batch_size),
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=1,
        )
        with progress_bar(total, f"batch {model.name} (ray)", config.quiet, unit="row") as bar:
            bar.update(
                total - sum(min(config.batch_size, total - i * config.batch_size) for i in todo)
            )
            for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
                counts = (batch["index"], batch["scored"], batch["rejected"])
                for index, rows, rejected in zip(*counts, strict=True):
                    store.record(int(index), int(rows), int(rejected))
                    bar.update(int(rows + rejected))
    finally:
        if owned:
            ray.shutdown()
    return close_job(config, store, model, started)
