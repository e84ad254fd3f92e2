"""``python -m service.batch.compare --log DIR --scores FILE``: a candidate against the log.

``FILE`` is a batch job's output over the payload log ``DIR`` (``python -m service.batch
--model M --version CANDIDATE --input DIR --output FILE``); each of its rows is matched to the
logged answer of the same ``payload_row``. For every answer field both hold, it prints:

- a yes/no or a label (``is_fraud``, a class): **agreement**, the share of rows where the
  candidate gives the logged answer;
- a number (a probability, a score): the largest and mean absolute difference, and the
  **population stability index** of the candidate's values against the logged ones:
  ``PSI = sum over bins (c - l) * ln(c / l)``, over the 10 bins cut at the logged values'
  deciles, ``c`` and ``l`` the shares of candidate and logged values in each bin (floored at
  1e-4). The usual reading: below 0.1 no shift, 0.1 to 0.25 a moderate shift, above 0.25 a
  major one.

A field the log holds redacted is named and not compared. Exit 0 after printing; 2 when
nothing matches (wrong log or model).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.payload_log.records import REDACTED
from service.payload_log.replay import PAYLOAD_ROW, logged_answers, read_records

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


def _numeric(values: pa.ChunkedArray) -> bool:
    return pa.types.is_floating(values.type) or pa.types.is_integer(values.type)


def compare_field(
    name: str, logged: pa.ChunkedArray, candidate: pa.ChunkedArray
) -> FieldComparison:
    """Agreement for booleans and text, differences and PSI for numbers; nothing for a field
    the log holds redacted."""
    if set(logged.unique().to_pylist()) == {REDACTED}:
        return FieldComparison(name, redacted=True)
    if _numeric(logged) and _numeric(candidate):
        old = logged.to_numpy().astype(np.float64)
        new = candidate.to_numpy().astype(np.float64)
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

    @property
    def lines(self) -> list[str]:
        head = (
            f"{self.model}: candidate {self.candidate_version} against the logged answers of "
            f"{', '.join(self.logged_versions)} over {self.rows} rows"
        )
        return [head, *(f"  {field.line}" for field in self.fields)]


def compare(log: Path, scores: Path) -> Comparison:
    """Match ``scores`` (a batch job's output over ``log``) to the logged answers."""
    candidate = _decoded(pq.read_table(scores))
    model = candidate["model_name"][0].as_py()
    logged = logged_answers(read_records(log), model)
    if logged.num_rows == 0 or candidate.num_rows == 0:
        raise ValueError(f"the log {log} holds no answered request of {model!r} to compare")
    joined = logged.join(candidate, PAYLOAD_ROW, right_suffix="_candidate", join_type="inner")
    fields = [
        compare_field(name, joined[name], joined[f"{name}_candidate"])
        for name in logged.column_names
        if name not in NOT_FIELDS and f"{name}_candidate" in joined.column_names
    ]
    versions = sorted({v for v in joined["logged_version"].to_pylist() if v is not None})
    return Comparison(
        model, versions, candidate["model_version"][0].as_py(), joined.num_rows, fields
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
