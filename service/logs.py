"""dlserve's own log lines (``service``, ``core`` and ``dlserve`` loggers): level and format
from the settings, on stderr beside BentoML's. ``json`` writes one object per line
(``time``, ``level``, ``logger``, ``message``, and ``exception`` when there is one) for log
collectors; ``text`` is for people.

BentoML logs every exception its routes raise at ERROR with a traceback, the request's own
faults too: a body that fails the route's schema (pydantic's ``ValidationError``, answered 400)
cost ~3.7 KB of log each. ``ClientErrorsInOneLine`` turns those records into one INFO line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

LOGGERS = ("dlserve", "service", "core")
# The logger of BentoML's ``log_exception`` (every failed route call, client errors included).
BENTOML_ROUTE_LOGGER = "bentoml._internal.server.http_app"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class ClientErrorsInOneLine(logging.Filter):
    """A record carrying a client's fault (a schema ``ValidationError``, a BentoML 4xx) becomes
    one INFO line without its traceback: ``invalid request on PATH [METHOD]: SUMMARY``."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            summary = f"{error.error_count()} validation errors"
        elif isinstance(error, BentoMLException) and error.error_code < 500:
            summary = f"{int(error.error_code)} {type(error).__name__}"
        else:
            return True
        path_and_method = record.getMessage().removeprefix("Exception on ")
        record.msg, record.args = "invalid request on %s: %s", (path_and_method, summary)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return True


def quiet_client_errors() -> None:
    """Install ``ClientErrorsInOneLine`` on BentoML's route logger (idempotent)."""
    logger = logging.getLogger(BENTOML_ROUTE_LOGGER)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, style: str) -> None:
    """Send dlserve's loggers to stderr at ``level`` in ``style`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    quiet_client_errors()
