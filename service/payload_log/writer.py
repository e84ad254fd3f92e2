"""The payload log's writer: a bounded queue per worker and one background thread.

``PayloadWriter.offer`` never blocks and never raises: a record finds room in the queue
(``DLSERVE_PAYLOAD_LOG_QUEUE`` records and ``DLSERVE_PAYLOAD_LOG_QUEUE_BYTES`` of bodies) or is
dropped and counted. The thread takes up to
``DLSERVE_PAYLOAD_LOG_PART_RECORDS`` records, or what arrived within
``DLSERVE_PAYLOAD_LOG_FLUSH_S`` of the first, and commits them through the batch job's part
store (``service.batch.parts``): the part ``part-NNNNNN.parquet`` is written under a temporary
name and renamed, then recorded in the worker's ``manifest.json`` (replaced atomically).

Counters, by model: ``queued`` (accepted by the queue), ``dropped`` (by reason: ``queue_full``,
``too_large``, ``write_failed``), ``written`` (its part file is in place) and ``acknowledged``
(its part is recorded in the manifest). **Acknowledged** is the promise: an acknowledged record
is in the log exactly once and survives a crash of the worker (until retention deletes its
part); a record queued or written but not acknowledged when the worker dies is lost (a written
part that no manifest lists is never read).

Each worker writes its own folder ``<DLSERVE_PAYLOAD_LOG_DIR>/<host>-<pid>-<start ns>`` (one
writer per manifest); after each commit it applies retention over the whole log folder
(``retain``).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter

from service.batch.parts import Manifest, write_part
from service.config import Settings
from service.payload_log.records import Captured, to_table

log = logging.getLogger(__name__)

KIND = "payload-log"
PART_GLOB = "part-*.parquet"
# Test hook: the writer thread never starts, so the queue fills (drops without a timing window).
PAUSED_ENV = "DLSERVE_PAYLOAD_LOG_WRITER_PAUSED"

QUEUED = Counter(
    "dlserve_payload_records_queued_total",
    "Payload records accepted by the writer's queue, by model.",
    ["model"],
)
DROPPED = Counter(
    "dlserve_payload_records_dropped_total",
    "Sampled payload records not logged, by model and reason: queue_full (the writer is "
    "behind), too_large (a body over DLSERVE_PAYLOAD_LOG_MAX_RECORD_BYTES), write_failed.",
    ["model", "reason"],
)
WRITTEN = Counter(
    "dlserve_payload_records_written_total",
    "Payload records whose Parquet part is in place (not yet acknowledged), by model.",
    ["model"],
)
ACKNOWLEDGED = Counter(
    "dlserve_payload_records_acknowledged_total",
    "Payload records whose part is recorded in its manifest: in the log exactly once, "
    "surviving a crash, by model.",
    ["model"],
)


@dataclass(frozen=True)
class Retention:
    """The log folder's bounds: all parts together at most ``max_bytes``, none older than
    ``max_age_s`` seconds."""

    max_bytes: int
    max_age_s: float


def retain(root: Path, retention: Retention, now: float) -> list[Path]:
    """Delete the parts (and stray temporary files) of every worker's folder under ``root``
    that are older than the age bound, then the oldest until the size bound holds; the paths
    deleted. A manifest may still list a deleted part: readers skip it."""
    files = []
    for path in [*root.glob(f"*/{PART_GLOB}"), *root.glob("*/part-*.tmp")]:
        try:
            stat = path.stat()
        except FileNotFoundError:  # another worker's retention got there first
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    files.sort()
    total = sum(size for _, size, _ in files)
    deleted = []
    for mtime, size, path in files:
        if now - mtime <= retention.max_age_s and total <= retention.max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted


class PayloadWriter:
    """One worker's payload log writer (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        redact: frozenset[str],
        queue_size: int,
        queue_bytes: int,
        part_records: int,
        flush_s: float,
        retention: Retention,
    ) -> None:
        self.root = root
        self.redact = redact
        self.part_records = part_records
        self.flush_s = flush_s
        self.retention = retention
        self.queue: queue.Queue[Captured | None] = queue.Queue(maxsize=queue_size)
        self.queue_bytes = queue_bytes
        self.held_bytes = 0  # bodies of the records in the queue
        self.holding = threading.Lock()
        self.thread: threading.Thread | None = None
        self.starting = threading.Lock()
        self.manifest: Manifest | None = None
        self.next_part = 0

    def offer(self, record: Captured) -> None:
        """Queue ``record`` for writing, or drop and count it when the queue is full."""
        if self.thread is None:
            self._start()
        with self.holding:
            room = self.held_bytes + record.size <= self.queue_bytes and not self.queue.full()
            if room:
                self.held_bytes += record.size
                self.queue.put_nowait(record)  # room: only this method puts, under the lock
        if not room:
            DROPPED.labels(model=record.model, reason="queue_full").inc()
            return
        QUEUED.labels(model=record.model).inc()

    def _take(self, timeout: float | None) -> Captured | None:
        """The next record (``None``: the end), waiting at most ``timeout`` (``queue.Empty``)."""
        record = self.queue.get(timeout=timeout)
        if record is not None:
            with self.holding:
                self.held_bytes -= record.size
        return record

    def _start(self) -> None:
        with self.starting:
            if self.thread is None and not os.environ.get(PAUSED_ENV):
                self.thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
                self.thread.start()

    def close(self) -> None:
        """Write what is queued, then stop the thread (at the worker's exit)."""
        if self.thread is not None:
            self.queue.put(None)  # waits for room: the thread keeps taking
            self.thread.join()

    def _run(self) -> None:
        while True:
            first = self._take(None)
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.flush_s
            ending = False
            while len(batch) < self.part_records:
                try:
                    item = self._take(max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    ending = True
                    break
                batch.append(item)
            self._commit(batch)
            if ending:
                return

    def _folder(self) -> Manifest:
        if self.manifest is None:
            started = time.time_ns()
            identity = {
                "kind": KIND,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_ns": started,
            }
            folder = self.root / f"{identity['host']}-{identity['pid']}-{started}"
            folder.mkdir(parents=True, exist_ok=True)
            self.manifest = Manifest(folder, identity, {})
            self.manifest.save()
        return self.manifest

    def _commit(self, batch: list[Captured]) -> None:
        models = Tally(record.model for record in batch)
        try:
            manifest = self._folder()
            name = f"part-{self.next_part:06d}.parquet"
            size = write_part(to_table(batch, self.redact), manifest.path.parent / name)
            for model, count in models.items():
                WRITTEN.labels(model=model).inc(count)
            manifest.record(
                str(self.next_part),
                {
                    "file": name,
                    "records": len(batch),
                    "bytes": size,
                    "first": _iso(min(record.started for record in batch)),
                    "last": _iso(max(record.started for record in batch)),
                },
            )
            self.next_part += 1
            for model, count in models.items():
                ACKNOWLEDGED.labels(model=model).inc(count)
            self._retain(manifest)
        except Exception:  # a full disk must not stop the log, nor ever reach a request
            log.exception("payload log: a part of %d records was not written", len(batch))
            for model, count in models.items():
                DROPPED.labels(model=model, reason="write_failed").inc(count)

    def _retain(self, manifest: Manifest) -> None:
        deleted = retain(self.root, self.retention, time.time())
        own = {path.name for path in deleted if path.parent == manifest.path.parent}
        gone = [key for key, entry in manifest.entries.items() if entry["file"] in own]
        if gone:
            manifest.forget(gone)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def from_settings(settings: Settings) -> PayloadWriter | None:
    """The worker's writer per the settings (``None`` when ``DLSERVE_PAYLOAD_LOG_DIR`` is
    unset); it writes what is queued when the worker exits normally."""
    if settings.payload_log_dir is None:
        return None
    writer = PayloadWriter(
        settings.payload_log_dir,
        frozenset(settings.payload_log_redact),
        settings.payload_log_queue,
        settings.payload_log_queue_bytes,
        settings.payload_log_part_records,
        settings.payload_log_flush_s,
        Retention(settings.payload_log_max_bytes, settings.payload_log_max_age_s),
    )
    atexit.register(writer.close)
    return writer
