"""``python -m service.batch.compare --log DIR --scores FILE``: a candidate against the log.

``FILE`` is a batch job's output over the payload log ``DIR`` (``python -m service.batch
--model M --version CANDIDATE --input DIR --output FILE``, with ``--replay v2`` for the V2
tensor records); each of its rows is matched to the logged answer of the same ``payload_row``
(of the kind of records the job replayed: named routes, whose answer fields are the route's,
or V2, whose are the graph's outputs by name). For every answer field both hold, it prints:

- a yes/no or a label (``is_fraud``, a class): **agreement**, the share of rows where the
  candidate gives the logged answer;
- a number (a probability, a score): the largest and mean absolute difference, and the
  **population stability index** of the candidate's values against the logged ones:
  ``PSI = sum over bins (c - l) * ln(c / l)``, over the 10 bins cut at the logged values'
  deciles, ``c`` and ``l`` the shares of candidate and logged values in each bin (floored at
  1e-4). The usual reading: below 0.1 no shift, 0.1 to 0.25 a moderate shift, above 0.25 a
  major one. A vector (a V2 output such as ``probabilities``) is compared over all its values.

A field the log holds redacted is named and not compared; the answered records the replay
could not score are counted by reason on the last line. Exit 0 after printing; 2 when
nothing matches (wrong log or model).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.payload_log.records import REDACTED
from service.payload_log.replay import KINDS, PAYLOAD_ROW, Replay, read_records, replay

BINS = 10
FLOOR = 1e-4
NOT_FIELDS = {PAYLOAD_ROW, "model_name", "model_version", "logged_version"}


def psi(logged: np.ndarray, candidate: np.ndarray, bins: int = BINS) -> float:
    """The population stability index of ``candidate`` against ``logged`` (module docstring)."""
    edges = np.unique(np.quantile(logged, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = [
        np.maximum(
            np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
            / len(values),
            FLOOR,
        )
        for values in (logged, candidate)
    ]
    return float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0])))


@dataclass(frozen=True)
class FieldComparison:
    """One answer field over the matched rows: agreement, or differences and PSI."""

    name: str
    agreement: float | None = None
    max_difference: float | None = None
    mean_difference: float | None = None
    psi: float | None = None
    redacted: bool = False

    @property
    def line(self) -> str:
        if self.redacted:
            return f"{self.name}: redacted in the log (DLSERVE_PAYLOAD_LOG_REDACT), not compared"
        if self.agreement is not None:
            return f"{self.name}: agreement {self.agreement:.2%}"
        return (
            f"{self.name}: max |difference| {self.max_difference:.3g}, mean "
            f"{self.mean_difference:.3g}, PSI {self.psi:.4f}"
        )


def _numeric(values: pa.ChunkedArray | pa.DataType) -> bool:
    kind = values if isinstance(values, pa.DataType) else values.type
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _numeric_lists(values: pa.ChunkedArray) -> bool:
    return pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type)


def _flat(values: pa.ChunkedArray) -> np.ndarray | None:
    """A list column's values as one flat float64 array, ``None`` unless numeric."""
    if not _numeric_lists(values) or not _numeric(values.type.value_type):
        return None
    return pc.list_flatten(values).to_numpy().astype(np.float64)


def compare_field(
    name: str, logged: pa.ChunkedArray, candidate: pa.ChunkedArray
) -> FieldComparison:
    """Agreement for booleans and text, differences and PSI for numbers (for a vector, over
    all its values); nothing for a field the log holds redacted."""
    if pa.types.is_string(logged.type) and set(logged.unique().to_pylist()) == {REDACTED}:
        return FieldComparison(name, redacted=True)
    old = new = None
    if _numeric(logged) and _numeric(candidate):
        old = logged.to_numpy().astype(np.float64)
        new = candidate.to_numpy().astype(np.float64)
    elif _numeric_lists(logged) and _numeric_lists(candidate):
        old, new = _flat(logged), _flat(candidate)
    if old is not None and new is not None and old.shape == new.shape:
        difference = np.abs(new - old)
        return FieldComparison(
            name, None, float(difference.max()), float(difference.mean()), psi(old, new)
        )
    same = np.asarray(logged.to_pylist(), object) == np.asarray(candidate.to_pylist(), object)
    return FieldComparison(name, agreement=float(np.mean(same)))


def _decoded(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary-encoded columns (model name and version) as plain ones."""
    return table.cast(
        pa.schema(
            field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field
            for field in table.schema
        )
    )


@dataclass(frozen=True)
class Comparison:
    """A candidate's scores against the logged answers."""

    model: str
    logged_versions: list[str]
    candidate_version: str
    rows: int
    fields: list[FieldComparison]
    kind: str = KINDS[0]
    not_replayed: str | None = None

    @property
    def lines(self) -> list[str]:
        head = (
            f"{self.model}: candidate {self.candidate_version} against the logged answers of "
            f"{', '.join(self.logged_versions)} over {self.rows} rows ({self.kind} records)"
        )
        tail = [f"  {self.not_replayed}"] if self.not_replayed else []
        return [head, *(f"  {field.line}" for field in self.fields), *tail]


def _matching(log: Path, model: str, keys: pa.ChunkedArray) -> Replay:
    """The replay of ``log`` whose rows the candidate scored: of the kind most of ``keys``
    (the candidate's ``payload_row``) belong to."""
    records = read_records(log)

    def matched(replayed: Replay) -> int:
        if replayed.answers.num_rows == 0:
            return 0
        logged_keys = replayed.answers[PAYLOAD_ROW].combine_chunks()
        return int(pc.sum(pc.is_in(keys, value_set=logged_keys)).as_py() or 0)

    return max((replay(records, model, kind) for kind in KINDS), key=matched)


def _matched_rows(logged: pa.Table, candidate: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The rows of both with a ``payload_row`` in both, in the candidate's order, row ``i`` of
    each the same key (taken by position: Arrow's join cannot carry every field type, such as
    an image answer's ``top_k`` list of objects)."""
    positions = pc.index_in(candidate[PAYLOAD_ROW], value_set=logged[PAYLOAD_ROW].combine_chunks())
    found = pc.is_valid(positions)
    return logged.take(positions.filter(found)), candidate.filter(found)


def compare(log: Path, scores: Path) -> Comparison:
    """Match ``scores`` (a batch job's output over ``log``, of either kind of replay) to the
    logged answers."""
    candidate = _decoded(pq.read_table(scores))
    if candidate.num_rows == 0:
        raise ValueError(f"the scores {scores} hold no rows")
    model, version = (candidate[name][0].as_py() for name in ("model_name", "model_version"))
    replayed = _matching(log, model, candidate[PAYLOAD_ROW])
    logged = replayed.answers
    if logged.num_rows == 0:
        raise ValueError(f"the log {log} holds no answered request of {model!r} to compare")
    logged, candidate = _matched_rows(logged, candidate)
    if logged.num_rows == 0:
        raise ValueError(f"no row of {scores} is a payload_row of the log {log}")
    fields = [
        compare_field(name, logged[name], candidate[name])
        for name in logged.column_names
        if name not in NOT_FIELDS and name in candidate.column_names
    ]
    versions = sorted({v for v in logged["logged_version"].to_pylist() if v is not None})
    return Comparison(
        model,
        versions,
        version,
        logged.num_rows,
        fields,
        replayed.kind,
        replayed.note,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.batch.compare", description=__doc__)
    parser.add_argument("--log", type=Path, required=True, help="the payload log folder")
    parser.add_argument(
        "--scores", type=Path, required=True, help="a batch job's Parquet output over that log"
    )
    args = parser.parse_args(argv)
    try:
        comparison = compare(args.log, args.scores)
    except ValueError as exc:
        print(f"compare refused: {exc}", file=sys.stderr)
        return 2
    print("\n".join(comparison.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
