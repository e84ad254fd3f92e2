"""A payload log read back: its acknowledged records, and their rows for a batch job.

``read_records`` reads every worker folder's manifest and the parts it lists (a part deleted
by retention is skipped; a part no manifest lists was never acknowledged and is never read).
For replay, ``replay_rows`` turns each answered (200) record of a named route of the model
into rows, one per item of the request's list (the fraud route's ``transactions``, the
sentiment route's ``texts``: an object item gives its fields as columns, a text the model's
first input column), each keyed ``<request id>/<position>`` in ``payload_row``;
``logged_answers`` gives the answer each row got (the items of the answer's ``results``) and
the version that gave it. V2 tensor records and uploads are not replayed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from service.batch.parts import Manifest, read_part
from service.payload_log.records import SCHEMA
from service.payload_log.writer import KIND

PAYLOAD_ROW = "payload_row"


def payload_source_rows(
    root: Path, model: str, input_columns: tuple[str, ...]
) -> tuple[pa.Table, dict[str, Any]]:
    """A batch job's input from the log at ``root``: ``model``'s rows and the fingerprint."""
    return replay_rows(read_records(root), model, input_columns), fingerprint(root)


def worker_folders(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Each worker folder of the log at ``root`` with its manifest, oldest writer first."""
    found = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        manifest = Manifest.read(folder)
        if manifest is not None and manifest["identity"].get("kind") == KIND:
            found.append((folder, manifest))
    return sorted(found, key=lambda pair: pair[1]["identity"]["started_ns"])


def is_payload_log(path: Path) -> bool:
    """Whether ``path`` is a payload log folder (it holds at least one worker's manifest)."""
    return path.is_dir() and bool(worker_folders(path))


def acknowledged_parts(root: Path) -> list[Path]:
    """The parts the manifests list that are still there, in writing order."""
    parts = []
    for folder, manifest in worker_folders(root):
        for key in sorted(manifest["chunks"], key=int):
            path = folder / manifest["chunks"][key]["file"]
            if path.exists():
                parts.append(path)
    return parts


def read_records(root: Path) -> pa.Table:
    """Every acknowledged record of the log at ``root`` (``records.SCHEMA``)."""
    tables = []
    for path in acknowledged_parts(root):
        try:
            tables.append(read_part(path))
        except FileNotFoundError:  # deleted by retention since the listing
            continue
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def fingerprint(root: Path) -> dict[str, Any]:
    """What a resumed batch job checks: the log's acknowledged parts and their sizes."""
    parts = acknowledged_parts(root)
    listing = [(str(path.relative_to(root)), path.stat().st_size) for path in parts]
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return {"path": str(root.resolve()), "parts": len(listing), "listing_sha256": digest}


def _parsed(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _pairs(record: dict[str, Any]) -> list[tuple[Any, Any]]:
    """``(request item, result)`` of a named route's record: the items of the request's first
    list field beside the answer's ``results``; none for anything else (V2, uploads)."""
    request, response = _parsed(record["request"]), _parsed(record["response"])
    items = next((value for value in request.values() if isinstance(value, list)), None)
    results = response.get("results")
    if items is None or not isinstance(results, list) or len(items) != len(results):
        return []
    return list(zip(items, results, strict=True))


def _answered(records: pa.Table, model: str) -> list[dict[str, Any]]:
    answered = pc.and_(pc.equal(records["model"], model), pc.equal(records["status"], 200))
    rows = records.filter(answered)
    return rows.select(["request_id", "version", "request", "response"]).to_pylist()


def replay_rows(records: pa.Table, model: str, input_columns: tuple[str, ...]) -> pa.Table:
    """The rows of ``model``'s answered records, keyed by ``payload_row`` (see the module
    docstring); the model's input columns as the request held them."""
    rows: list[dict[str, Any]] = []
    for record in _answered(records, model):
        for position, (item, _) in enumerate(_pairs(record)):
            row = item if isinstance(item, dict) else {input_columns[0]: item}
            rows.append({PAYLOAD_ROW: f"{record['request_id']}/{position}", **row})
    return pa.Table.from_pylist(rows)


def logged_answers(records: pa.Table, model: str) -> pa.Table:
    """For every replayable row of ``model``: its ``payload_row``, ``logged_version`` and the
    fields of the answer it got."""
    rows: list[dict[str, Any]] = []
    for record in _answered(records, model):
        for position, (_, result) in enumerate(_pairs(record)):
            fields = result if isinstance(result, dict) else {"result": result}
            key = f"{record['request_id']}/{position}"
            rows.append({PAYLOAD_ROW: key, "logged_version": record["version"], **fields})
    return pa.Table.from_pylist(rows)
