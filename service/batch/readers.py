"""Stream an input file as pyarrow tables of exactly ``batch_size`` rows (the last may be short).

Chunking is deterministic: chunk ``i`` holds rows ``[i * batch_size, (i + 1) * batch_size)``,
whatever the file's row groups or blocks, so a resumed job sees the same chunks. Parquet is read
with pyarrow; CSV and JSON Lines with pandas' chunked readers (a column holding a bad value is
kept as text for the validator to reject, rather than failing the read). A folder is read as
image files: one row per file, ``path`` (its name) and ``image`` (its bytes); a payload log
folder (``service.payload_log``) as the rows of the model's answered requests of one kind
(named routes, or V2 tensors), keyed by ``payload_row``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from service.payload_log import replay

log = logging.getLogger(__name__)
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


class InputError(ValueError):
    """The input file is missing, of an unknown format, or unreadable."""


@dataclass
class Source:
    """An opened input: its chunks, its row count when known, and a fingerprint for resume."""

    chunks: Iterator[pa.Table]
    rows: int | None
    fingerprint: dict[str, Any]


def input_format(path: Path) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file suffix; InputError otherwise."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError as exc:
        raise InputError(
            f"{path.name}: unknown input format; use one of {sorted(FORMATS)}"
        ) from exc


def open_source(
    path: Path,
    batch_size: int,
    columns: list[str],
    categorical: list[str] | None = None,
    model: tuple[str, str, tuple[str, ...]] | None = None,
) -> Source:
    """Open ``path`` for chunked reading of ``columns`` (missing ones are left to the validator);
    Parquet delivers the ``categorical`` ones dictionary-encoded. ``model``: the scoring model's
    name, the kind of replay (``replay.ROUTES`` or ``replay.V2``) and its input columns, which
    pick a payload log's rows; the records that give none are logged as a warning."""
    if model is not None and replay.is_payload_log(path):
        replayed, fingerprint = replay.payload_source(path, *model)
        if replayed.note is not None:
            log.warning("payload log %s: %s", path, replayed.note)
        rows = replayed.rows
        present = rows.select([name for name in columns if name in rows.column_names])
        chunks = (present.slice(start, batch_size) for start in range(0, len(rows), batch_size))
        return Source(chunks, len(rows), fingerprint)
    if path.is_dir():
        return _image_folder(path, batch_size)
    if not path.is_file():
        raise InputError(f"input {path} is not a file or folder")
    stat = path.stat()
    fingerprint = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    kind = input_format(path)
    if kind == "parquet":
        parquet = _parquet_file(path, categorical)
        present = [name for name in columns if name in parquet.schema_arrow.names]
        batches = parquet.iter_batches(batch_size=batch_size, columns=present)
        return Source(_exact(batches, batch_size), parquet.metadata.num_rows, fingerprint)
    if kind == "csv":
        frames = pd.read_csv(path, chunksize=batch_size, usecols=lambda name: name in columns)
    else:
        frames = pd.read_json(path, lines=True, chunksize=batch_size)
    return Source((frame_to_table(frame, columns) for frame in frames), None, fingerprint)


def _image_folder(folder: Path, batch_size: int) -> Source:
    """A folder's files (sorted by name) as ``path`` and ``image`` (bytes) columns."""
    files = sorted(item for item in folder.iterdir() if item.is_file())
    listing = [(item.name, item.stat().st_size, item.stat().st_mtime_ns) for item in files]
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    fingerprint = {"path": str(folder.resolve()), "files": len(files), "listing_sha256": digest}

    def chunks() -> Iterator[pa.Table]:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            yield pa.table(
                {
                    "path": [item.name for item in batch],
                    "image": pa.array([item.read_bytes() for item in batch], pa.binary()),
                }
            )

    return Source(chunks(), len(files), fingerprint)


def frame_to_table(frame: pd.DataFrame, columns: list[str]) -> pa.Table:
    """A pandas chunk as arrow; mixed-type columns become text so the validator can judge them."""
    frame = frame[[name for name in columns if name in frame.columns]]
    mixed = [name for name in frame.columns if frame[name].dtype == object]
    frame = frame.astype({name: "string" for name in mixed})
    return pa.Table.from_pandas(frame, preserve_index=False)


def _exact(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Regroup record batches into tables of exactly ``size`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


def _parquet_file(path: Path, categorical: list[str] | None) -> pq.ParquetFile:
    """``path`` opened to read the ``categorical`` columns it has dictionary-encoded (the
    footer is parsed once: read here to learn the names, then handed to the reader)."""
    metadata = pq.read_metadata(path)
    names = metadata.schema.to_arrow_schema().names
    present = [name for name in categorical or [] if name in names]
    return pq.ParquetFile(path, metadata=metadata, read_dictionary=present)


def parquet_rows(
    path: Path, start: int, stop: int, columns: list[str], categorical: list[str] | None = None
) -> pa.Table:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups that hold them."""
    parquet = _parquet_file(path, categorical)
    groups, first, offset = [], None, 0
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if offset < stop and offset + size > start:
            groups.append(group)
            first = offset if first is None else first
        offset += size
    present = [name for name in columns if name in parquet.schema_arrow.names]
    table = parquet.read_row_groups(groups, columns=present)
    return table.slice(start - (first or 0), stop - start)
