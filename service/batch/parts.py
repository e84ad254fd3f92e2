"""Exactly-once output: one part file per chunk, atomic renames, and a manifest.

``write_part`` and ``Manifest`` are the store both batch jobs and payload logs
(``service.payload_log``) write through: a part is written to a temporary name and
``os.replace``-d (Arrow IPC for ``.arrow``, Parquet for ``.parquet``), and only then recorded in
``manifest.json`` (replaced atomically), so a reader that trusts the manifest sees every
recorded part complete and no other.

Chunk ``i``'s scores go to ``part-00000i.arrow`` and its rejects to ``rejects-00000i.arrow``
(Arrow IPC: cheap to write and read back) in the work folder, each written to a temporary name
and then ``os.replace``-d; only after both does the manifest (replaced atomically too) record
the chunk as done. A job killed at any moment leaves every recorded chunk complete, and a
resumed job redoes exactly the unrecorded ones. The final files are written through temporary
names and renamed into place when complete; then the work folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
# Test hook: seconds to sleep between writing a chunk's parts and recording it in the manifest,
# so a test can SIGKILL the job inside the riskiest window.
PAUSE_ENV = "DLSERVE_BATCH_PAUSE_BEFORE_MANIFEST_S"


class ResumeMismatchError(RuntimeError):
    """``--resume`` found a manifest of a different job (input, batch size, model, id column or
    column mapping)."""


def _replace_json(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, path)


def write_part(table: pa.Table, path: Path) -> int:
    """Put ``table`` at ``path`` atomically (a temporary name, then ``os.replace``): Parquet for
    a ``.parquet`` path, Arrow IPC otherwise; the bytes written."""
    temporary = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        pq.write_table(table, temporary)
    else:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
            out.write_table(table)
    os.replace(temporary, path)
    return path.stat().st_size


def read_part(path: Path) -> pa.Table:
    """A part ``write_part`` wrote."""
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


class Manifest:
    """``manifest.json`` of a part folder: the writer's ``identity`` and one entry per recorded
    part (``entries``: key -> figures), rewritten whole and replaced atomically on every
    change. One writer per folder; readers may read it at any time (``read``)."""

    def __init__(self, folder: Path, identity: dict[str, Any], entries: dict[str, Any]) -> None:
        self.path = folder / MANIFEST
        self.identity = identity
        self.entries = entries
        self.pause = float(os.environ.get(PAUSE_ENV, "0") or 0)

    @staticmethod
    def read(folder: Path) -> dict[str, Any] | None:
        """``{"identity", "chunks"}`` as last recorded in ``folder``; ``None`` without one."""
        try:
            return json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            return None

    def record(self, key: str, entry: dict[str, Any]) -> None:
        """Record part ``key`` (its file must already be in place)."""
        if self.pause:
            time.sleep(self.pause)
        self.entries[key] = entry
        self.save()

    def forget(self, keys: list[str]) -> None:
        """Drop the entries of parts that are gone (deleted by retention)."""
        for key in keys:
            self.entries.pop(key, None)
        self.save()

    def save(self) -> None:
        _replace_json(self.path, {"identity": self.identity, "chunks": self.entries})


def write_parts(folder: Path, index: int, scored: pa.Table, rejects: pa.Table) -> int:
    """Put chunk ``index``'s scores and rejects in place atomically (not yet recorded); the
    bytes written."""
    paths = (folder / f"rejects-{index:06d}.arrow", folder / f"part-{index:06d}.arrow")
    tables = (rejects, scored)
    return sum(write_part(table, path) for table, path in zip(tables, paths, strict=True))


def _differences(original: dict[str, Any], current: dict[str, Any]) -> str:
    """``key: original ... now ...`` for every key whose value differs between the two jobs."""
    keys = [key for key in {**original, **current} if original.get(key) != current.get(key)]
    return "; ".join(
        f"{key}: original {original.get(key)!r}, now {current.get(key)!r}" for key in keys
    )


class FinalFile:
    """``target`` (Parquet, or CSV for ``.csv``) filled in chunk order through a temporary file
    and renamed into place by ``close``: readers never see a partial output."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.with_name(target.name + ".tmp")
        self.writer: pq.ParquetWriter | pcsv.CSVWriter | None = None
        self.schema: pa.Schema | None = None

    def append(self, table: pa.Table) -> None:
        if self.writer is None:
            self.schema = table.schema
            self.writer = (
                pcsv.CSVWriter(self.temporary, table.schema)
                if self.target.suffix.lower() == ".csv"
                else pq.ParquetWriter(
                    self.temporary,
                    table.schema,
                    compression="none",  # scores are floats: compression saves little, costs time
                    use_dictionary=[
                        field.name
                        for field in table.schema
                        if pa.types.is_string(field.type) or pa.types.is_dictionary(field.type)
                    ],
                )
            )
        self.writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        assert self.writer is not None
        self.writer.close()
        os.replace(self.temporary, self.target)


class PartStore:
    """The work folder of one job; ``identity`` says which job it belongs to.

    ``targets`` are the final scores and rejects files. A job that starts from chunk 0 also
    streams each committed chunk into them as it goes (so the final write overlaps scoring);
    a resumed job builds them from the parts at ``finish``.
    """

    def __init__(
        self, folder: Path, identity: dict[str, Any], resume: bool, targets: tuple[Path, Path]
    ) -> None:
        self.folder = folder
        self.identity = identity
        self.targets = targets
        stored = Manifest.read(folder) if resume else None
        if stored is not None:
            if stored["identity"] != identity:
                raise ResumeMismatchError(
                    f"{folder} belongs to another job ({_differences(stored['identity'], identity)}"
                    "); resume with the original options, or rerun without --resume to start over"
                )
        else:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(folder, identity, stored["chunks"] if stored else {})
        self.chunks: dict[str, dict[str, int]] = self.manifest.entries
        self.streams = None if self.chunks else [FinalFile(target) for target in targets]
        self.streamed = 0
        self.bytes_written = 0  # parts written by this run (the final files hold as much again)

    def done(self, index: int) -> bool:
        return str(index) in self.chunks

    def commit(self, index: int, scored: pa.Table, rejects: pa.Table) -> None:
        """Write chunk ``index``'s parts, record it in the manifest, stream it to the targets."""
        self.bytes_written += write_parts(self.folder, index, scored, rejects)
        self.record(index, scored.num_rows, rejects.num_rows)
        if self.streams is not None and index == self.streamed:
            for stream, table in zip(self.streams, (scored, rejects), strict=True):
                stream.append(table)
            self.streamed += 1

    def record(self, index: int, scored: int, rejected: int) -> None:
        """Mark chunk ``index`` done in the manifest (its parts must already be in place)."""
        self.manifest.record(str(index), {"scored": scored, "rejected": rejected})

    def totals(self) -> tuple[int, int]:
        """``(scored, rejected)`` rows over every recorded chunk."""
        return (
            sum(chunk["scored"] for chunk in self.chunks.values()),
            sum(chunk["rejected"] for chunk in self.chunks.values()),
        )

    def finish(self) -> None:
        """Complete the targets (from the parts unless streamed whole); drop the folder."""
        if self.streams is None or self.streamed != len(self.chunks):
            self.streams = [FinalFile(target) for target in self.targets]
            for index in sorted(map(int, self.chunks)):
                self.streams[0].append(read_part(self.folder / f"part-{index:06d}.arrow"))
                self.streams[1].append(read_part(self.folder / f"rejects-{index:06d}.arrow"))
        for stream in self.streams:
            stream.close()
        shutil.rmtree(self.folder)
