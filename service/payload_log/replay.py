"""A payload log read back: its acknowledged records, and their rows for a batch job.

``read_records`` reads every worker folder's manifest and the parts it lists (a part deleted
by retention is skipped; a part no manifest lists was never acknowledged and is never read).
For replay, ``replay`` turns each answered (200) record of a model into rows for a batch job,
each keyed ``<request id>/<position>`` in ``payload_row``, beside the answer each row got and
the version that gave it (what ``python -m service.batch.compare`` reads). A replay is of one
kind of record:

- ``routes``: the area's named routes. A JSON request gives one row per item of its first
  list field (the fraud route's ``transactions``, the sentiment route's ``texts``: an object
  item gives its fields as columns, a text the model's first input column) beside the items
  of the answer's ``results``; a multipart upload (``/v1/images/classify``) gives one row,
  its files by field name (``image``), beside the answer's fields.
- ``v2``: ``POST /v2/models/{name}/infer``, JSON or binary tensors (``service.payload_log.v2``).
  Row ``i`` holds row ``i`` (axis 0) of each input tensor under the input's name, the graph's
  own inputs, which the batch job scores as they are (``service.batch.tensor_adapter``); the
  answer holds row ``i`` of each output under the output's name.

An answered record that gives no rows is counted by reason (``Replay.skipped``): a record of
the other kind, a body not recorded (not JSON while fields are redacted), a redacted input
tensor, an answer whose results do not pair with the request's items. A request dropped when
captured (over ``DLSERVE_PAYLOAD_LOG_MAX_RECORD_BYTES``) is not in the log at all: the
``dlserve_payload_records_dropped_total{reason="too_large"}`` counter counts it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter as Tally
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from service.batch.parts import Manifest, read_part
from service.payload_log.records import NOT_RECORDED, SCHEMA
from service.payload_log.uploads import LoggedUploadError, is_upload, uploaded_files
from service.payload_log.v2 import LoggedTensorError, logged_tensors, row_values, rows_of
from service.payload_log.writer import KIND

PAYLOAD_ROW = "payload_row"
ROUTES, V2 = "routes", "v2"
KINDS = (ROUTES, V2)
Unit = tuple[dict[str, Any], dict[str, Any]]  # a row's input columns, the answer it got


def payload_source(
    root: Path, model: str, kind: str, input_columns: tuple[str, ...]
) -> tuple[Replay, dict[str, Any]]:
    """A batch job's input from the log at ``root``: ``model``'s replay of ``kind`` and the
    log's fingerprint."""
    return replay(read_records(root), model, kind, input_columns), fingerprint(root)


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


class Skip(Exception):
    """Why a record gives no rows (its message is the reason the replay reports)."""


def _parsed(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def kind_of(record: dict[str, Any]) -> str:
    """``v2`` for a record of a V2 infer route, ``routes`` for a named route's."""
    return V2 if record["route"].startswith("/v2/") else ROUTES


def _named_units(record: dict[str, Any], first_column: str) -> list[Unit]:
    """A named route's rows: the items of the request's first list field beside the answer's
    ``results`` (an object item gives its fields, anything else is ``first_column``); an upload's
    one row: its files by field name beside the answer's fields (but ``model``)."""
    response = _parsed(record["response"])
    if is_upload(record["request_type"]):
        try:
            files = uploaded_files(record["request"], record["request_type"])
        except LoggedUploadError as exc:
            raise Skip(f"upload: {exc}") from exc
        return [(files, {key: value for key, value in response.items() if key != "model"})]
    request = _parsed(record["request"])
    items = next((value for value in request.values() if isinstance(value, list)), None)
    results = response.get("results")
    if items is None or not isinstance(results, list) or len(items) != len(results):
        raise Skip("no list of items in the request beside the answer's results")
    return [
        (item if isinstance(item, dict) else {first_column: item}, result)
        for item, result in zip(items, results, strict=True)
    ]


def _v2_units(record: dict[str, Any]) -> list[Unit]:
    """A V2 record's rows: row ``i`` of each input tensor (as nested lists) beside row ``i``
    of each output (``v2.row_values``)."""
    try:
        inputs = logged_tensors(record["request"], "inputs")
        outputs = logged_tensors(record["response"], "outputs")
        rows = rows_of(inputs)
        if rows_of(outputs) != rows:
            raise LoggedTensorError("the answer's rows differ from the request's")
    except LoggedTensorError as exc:
        raise Skip(f"V2 tensors: {exc}") from exc
    given = {name: array.tolist() for name, array in inputs.items()}
    answered = {name: row_values(array).to_pylist() for name, array in outputs.items()}
    return [
        (
            {name: values[row] for name, values in given.items()},
            {name: values[row] for name, values in answered.items()},
        )
        for row in range(rows)
    ]


def _units(record: dict[str, Any], first_column: str) -> list[Unit]:
    """``(row, answer)`` of each row of an answered record, or ``Skip`` saying why none."""
    for body in ("request", "response"):
        if record[body] == NOT_RECORDED:
            raise Skip(
                f"the {body} was not recorded (not JSON while DLSERVE_PAYLOAD_LOG_REDACT is set)"
            )
    return _v2_units(record) if kind_of(record) == V2 else _named_units(record, first_column)


@dataclass(frozen=True)
class Replay:
    """One model's answered records of one kind, as a batch job's rows and as the answers they
    got (both keyed by ``payload_row``), and how many answered records gave no rows, by reason.
    """

    model: str
    kind: str
    rows: pa.Table
    answers: pa.Table
    skipped: dict[str, int]

    @property
    def note(self) -> str | None:
        """The skipped records in one line, or ``None`` when every record was replayed."""
        if not self.skipped:
            return None
        reasons = "; ".join(f"{count} {reason}" for reason, count in self.skipped.items())
        total = sum(self.skipped.values())
        return f"{total} answered records of {self.model} not replayed ({self.kind}): {reasons}"


OTHER_KIND = {
    ROUTES: "V2 tensor records (replay them with --replay v2)",
    V2: "named-route records (replay them with --replay routes)",
}


def replay(
    records: pa.Table, model: str, kind: str = ROUTES, input_columns: tuple[str, ...] = ("",)
) -> Replay:
    """``model``'s answered (200) records of ``kind`` as rows and answers (module docstring);
    a named route's item that is not an object is the first of ``input_columns``."""
    answered = pc.and_(pc.equal(records["model"], model), pc.equal(records["status"], 200))
    selected = records.filter(answered).select(
        ["request_id", "route", "version", "request_type", "request", "response"]
    )
    rows: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    skipped: Tally[str] = Tally()
    for record in selected.to_pylist():
        if kind_of(record) != kind:
            skipped[OTHER_KIND[kind]] += 1
            continue
        try:
            units = _units(record, input_columns[0])
        except Skip as exc:
            skipped[str(exc)] += 1
            continue
        for position, (row, answer) in enumerate(units):
            key = {PAYLOAD_ROW: f"{record['request_id']}/{position}"}
            rows.append({**key, **row})
            answers.append({**key, "logged_version": record["version"], **answer})
    return Replay(model, kind, _table(rows), _table(answers), dict(skipped))


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    """``rows`` as a table with a column for every key any row has (null where a row lacks
    it: a V2 request may ask for some outputs only), each column's type read from all rows."""
    names = dict.fromkeys(name for row in rows for name in row)
    return pa.table({name: _column([row.get(name) for row in rows]) for name in names})


def _column(values: list[Any]) -> pa.Array:
    """``values`` as one column. Files beside text (image uploads beside the image batch
    route's base64 items) become base64 text too, which the image adapter decodes; values of
    other mixed types (a field redacted in some records only: ``REDACTED`` beside numbers)
    become their JSON text, which the job rejects and ``compare`` compares as text."""
    if any(isinstance(value, str) for value in values):
        values = [
            base64.b64encode(value).decode() if isinstance(value, bytes) else value
            for value in values
        ]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [
                value if value is None or isinstance(value, str) else json.dumps(value)
                for value in values
            ]
        )


def replay_rows(
    records: pa.Table, model: str, input_columns: tuple[str, ...], kind: str = ROUTES
) -> pa.Table:
    """The rows of ``model``'s answered records of ``kind``, keyed by ``payload_row``."""
    return replay(records, model, kind, input_columns).rows


def logged_answers(records: pa.Table, model: str, kind: str = ROUTES) -> pa.Table:
    """For every replayable row of ``model``'s records of ``kind``: its ``payload_row``,
    ``logged_version`` and the fields of the answer it got."""
    return replay(records, model, kind).answers
