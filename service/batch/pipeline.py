"""Overlap file I/O with inference: read ahead in one thread, commit behind in another.

ONNX Runtime, Parquet reading and Parquet writing all release the GIL, so with the session on
one core the reads and writes proceed on another. Order is kept: chunks arrive in input order
and a single writer thread commits them in the order they were handed over.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` from a background thread, at most ``depth`` items ahead."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="batch-read-ahead")
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class WriteBehind:
    """Run commits in one background thread, at most ``depth`` waiting; errors re-raised."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-write-behind")
        self.pending: deque[Future[None]] = deque()

    def submit(self, commit: Callable[..., None], *args: Any) -> None:
        self.pending.append(self.pool.submit(commit, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)
