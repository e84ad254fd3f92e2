"""Each worker's poller: new model versions in the store are loaded while the worker serves.

A daemon thread calls every served model's ``refresh()`` each ``DLSERVE_MODEL_POLL_S`` seconds
(a cheap read of the store's ``latest`` pointer unless a new version is there); loading runs in
this thread, never on the event loop, so requests keep being answered meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from service.served_model import ServedModel

log = logging.getLogger(__name__)


class ModelWatcher:
    """Polls ``models`` every ``interval_s`` seconds (> 0) until ``stop()``."""

    def __init__(self, models: Iterable[ServedModel], interval_s: float) -> None:
        self._models = list(models)
        self._interval = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            for served in self._models:
                served.refresh()  # never raises: a failure is recorded on the model
