"""Vectorised column validation derived from a pydantic row model: the limits live once.

``ColumnRules.from_model(Transaction)`` reads each field's type (float, int, bool or a Literal
of choices) and its ``ge``/``le`` limits from ``model_fields``; ``validate(table)`` checks a
whole pyarrow table at once and returns numpy columns plus one reason per row (``None`` when
the row is valid). Cross-field rules (``AtLeast``) are shared objects that the pydantic model's
validator calls too, so batch and HTTP accept and reject the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

Columns = dict[str, np.ndarray]
TRUE_WORDS = ("1", "true", "t", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "f", "no", "n", "off")


@dataclass(frozen=True)
class AtLeast:
    """Row rule: column ``high`` must be at least column ``low`` (scalars or arrays)."""

    high: str
    low: str

    @property
    def message(self) -> str:
        return f"{self.high} must be at least {self.low}"

    def holds(self, values: Mapping[str, Any]) -> Any:
        return values[self.high] >= values[self.low]


@dataclass(frozen=True)
class ColumnRule:
    """One field: ``kind`` is float, int, bool or choice; ``ge``/``le`` bound numbers."""

    name: str
    kind: str
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()

    @classmethod
    def from_field(cls, name: str, annotation: Any, metadata: list[Any]) -> ColumnRule:
        """The rule pydantic applies to ``name``; TypeError for what it cannot mirror."""
        limits = {"ge": None, "le": None}
        for item in metadata:
            if isinstance(item, annotated_types.Ge | annotated_types.Le):
                limits["ge" if isinstance(item, annotated_types.Ge) else "le"] = float(
                    getattr(item, "ge", getattr(item, "le", None))
                )
            else:
                raise TypeError(f"{name}: constraint {item!r} has no vectorised twin")
        if get_origin(annotation) is Literal:
            return cls(name, "choice", choices=tuple(str(v) for v in get_args(annotation)))
        kinds = {float: "float", int: "int", bool: "bool"}
        if annotation not in kinds:
            raise TypeError(f"{name}: type {annotation!r} has no vectorised twin")
        return cls(name, kinds[annotation], **limits)

    def check(
        self, column: pa.ChunkedArray | None, rows: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(values, bad)``: the column as numpy and a mask of rows breaking this rule, or
        ``None`` for the mask when no row does."""
        if column is None:
            return np.zeros(rows), np.ones(rows, dtype=bool)
        if self.kind == "choice":
            codes = self.codes(column)
            bad = codes < 0
            return codes, bad if bad.any() else None
        clean = self.clean_numbers(column)
        if clean is not None:
            return clean, None
        values = _numbers(column, words=self.kind == "bool")
        bad = ~np.isfinite(values)
        if self.kind == "bool":
            return values.astype(bool), bad | ((values != 0) & (values != 1))
        if self.kind == "int":
            with np.errstate(invalid="ignore"):
                bad |= np.mod(values, 1) != 0
        with np.errstate(invalid="ignore"):
            if self.ge is not None:
                bad |= values < self.ge
            if self.le is not None:
                bad |= values > self.le
        return values, bad

    def clean_numbers(self, column: pa.ChunkedArray) -> np.ndarray | None:
        """The fast path for the usual column: numeric, of a type the rule accepts, without
        nulls, and with every value keeping the rule (its minimum and maximum do; a NaN fails
        both comparisons). Then the column as numpy, as stored; otherwise ``None``."""
        integral = pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)
        floating = pa.types.is_floating(column.type) and self.kind == "float"
        if column.null_count or not (integral or floating) or len(column) == 0:
            return None
        values = column.to_numpy()
        low, high = (0, 1) if self.kind == "bool" else (self.ge, self.le)
        lowest, highest = values.min(), values.max()
        if (low is not None and not lowest >= low) or (high is not None and not highest <= high):
            return None
        return values.astype(bool, copy=False) if self.kind == "bool" else values

    def codes(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Each value's position in ``choices`` (int64; -1 for unknown or missing).

        A dictionary-encoded column is looked up once per distinct value, not once per row.
        """
        if isinstance(values, pa.ChunkedArray) and pa.types.is_dictionary(values.type):
            parts = [self.codes(chunk) for chunk in values.chunks]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if isinstance(values, pa.DictionaryArray):
            per_value = self.codes(values.dictionary)
            indices = pc.fill_null(values.indices, -1).to_numpy(zero_copy_only=False)
            return np.where(indices >= 0, per_value[indices], -1)
        codes = pc.index_in(pc.cast(values, pa.string()), value_set=pa.array(self.choices))
        return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    @property
    def message(self) -> str:
        if self.kind == "choice":
            return f"{self.name}: must be one of {list(self.choices)}"
        if self.kind == "bool":
            return f"{self.name}: must be a boolean"
        kind = "an integer" if self.kind == "int" else "a finite number"
        return f"{self.name}: must be {kind} in [{self.ge:g}, {self.le:g}]"


def _numbers(column: pa.ChunkedArray, words: bool) -> np.ndarray:
    """A column as float64 (with ``words``: true/false words too); others become NaN."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pd.Series(column.to_numpy(zero_copy_only=False), dtype="string").str.lower()
        parsed = pd.to_numeric(text, errors="coerce").astype("float64")
        if words:
            known = dict.fromkeys(TRUE_WORDS, 1.0) | dict.fromkeys(FALSE_WORDS, 0.0)
            parsed = parsed.fillna(text.map(known).astype("float64"))
        return parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    if not (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
        or pa.types.is_null(column.type)
    ):
        return np.full(len(column), np.nan)
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class ColumnRules:
    """Every field rule of a row model plus its cross-field rules."""

    fields: tuple[ColumnRule, ...]
    row_rules: tuple[AtLeast, ...] = ()

    @classmethod
    def from_model(cls, model: type[BaseModel], row_rules: tuple[AtLeast, ...] = ()) -> ColumnRules:
        return cls(
            tuple(
                ColumnRule.from_field(name, info.annotation, info.metadata)
                for name, info in model.model_fields.items()
            ),
            row_rules,
        )

    @property
    def names(self) -> list[str]:
        return [rule.name for rule in self.fields]

    def rule(self, name: str) -> ColumnRule:
        return next(rule for rule in self.fields if rule.name == name)

    def first_broken(self, matrix: np.ndarray, names: tuple[str, ...]) -> tuple[int, str] | None:
        """For a matrix of numbers whose columns are the fields ``names`` (booleans as 0/1;
        the row rules' columns among them): the first row that breaks a rule and the first
        rule it breaks (as ``validate`` words it), or ``None``. Vectorised across columns, so
        a request's few rows cost a few numpy calls."""
        low, high, whole, messages = _bounds(self, names)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(matrix) | (matrix < low) | (matrix > high)
            bad |= whole & (np.mod(matrix, 1) != 0)
            columns = dict(zip(names, matrix.T, strict=True))
            broken = [bad, *(~np.asarray(rule.holds(columns))[:, None] for rule in self.row_rules)]
        table = np.concatenate(broken, axis=1)
        rows = np.flatnonzero(table.any(axis=1))
        if not rows.size:
            return None
        row = int(rows[0])
        return row, messages[int(table[row].argmax())]

    def validate(self, table: pa.Table) -> tuple[Columns, np.ndarray]:
        """``(columns, reasons)``: numpy columns of every row and the first broken rule per row.

        Numbers come as stored when clean (else as float64), booleans as bool, choices as codes
        (see ``ColumnRule.codes``);
        ``reasons[i]`` is ``None`` for a valid row.
        """
        rows = table.num_rows
        first_broken = np.full(rows, -1)
        columns: Columns = {}
        messages = []
        for rule in self.fields:
            present = table.column(rule.name) if rule.name in table.column_names else None
            columns[rule.name], bad = rule.check(present, rows)
            if bad is not None:
                first_broken[bad & (first_broken < 0)] = len(messages)
            messages.append(
                rule.message if present is not None else f"{rule.name}: column is missing"
            )
        for row_rule in self.row_rules:
            with np.errstate(invalid="ignore"):
                broken = ~row_rule.holds(columns)
            first_broken[broken & (first_broken < 0)] = len(messages)
            messages.append(row_rule.message)
        reasons = np.full(rows, None, dtype=object)
        rejected = first_broken >= 0
        reasons[rejected] = np.array(messages, dtype=object)[first_broken[rejected]]
        return columns, reasons


@functools.cache
def _bounds(
    rules: ColumnRules, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per column of ``names``: lowest and highest value, whether whole numbers only; and the
    messages of those rules then of the row rules."""
    chosen = [rules.rule(name) for name in names]
    low = [0 if r.kind == "bool" else -np.inf if r.ge is None else r.ge for r in chosen]
    high = [1 if r.kind == "bool" else np.inf if r.le is None else r.le for r in chosen]
    whole = [r.kind in ("int", "bool") for r in chosen]
    messages = [r.message for r in chosen] + [rule.message for rule in rules.row_rules]
    return np.array(low), np.array(high), np.array(whole), messages
