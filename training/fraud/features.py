"""Encoding, loading and time-ordered splitting of fraud tables described by a ``FeatureSpec``.

::

    spec = FeatureSpec.from_json("my_spec.json")
    frame = load_table("transactions.parquet", spec)
    train, validation, test = time_ordered_split(frame, spec)
    numeric, categorical = encode(train, spec)

:func:`encode` returns raw (unscaled) values; scaling lives in the model's preprocessor
(``models.tabular.TabularPreprocessor``), fitted on training rows only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.features import MAX_SHOWN, FeatureSpec, numeric_values


def encode(df: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Raw model inputs: ``numeric`` float32 [N, len(spec.numeric)], ``categorical`` int64.

    ``numeric`` holds the values as they are (booleans as 0/1, no log or scaling);
    ``categorical`` [N, len(spec.categorical)] holds each value's index in its allowed list.
    Raises ``ValueError`` naming the column on a missing column, a non-finite numeric value or
    an unknown category (call :meth:`FeatureSpec.validate` for the full check).
    """
    missing = [name for name in spec.feature_columns if name not in df.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}")
    if spec.numeric:
        numeric = np.column_stack([numeric_values(df, name) for name in spec.numeric])
    else:
        numeric = np.empty((len(df), 0))
    finite = np.isfinite(numeric)
    if not finite.all():
        column = spec.numeric[int(np.argwhere(~finite)[0, 1])]
        raise ValueError(f"numeric column {column!r} has NaN/inf values")

    categorical = np.empty((len(df), len(spec.categorical)), dtype=np.int64)
    for index, (name, allowed) in enumerate(spec.categorical.items()):
        codes = pd.Index(allowed, dtype=object).get_indexer(df[name].astype(object))
        if (codes < 0).any():
            bad = pd.unique(df[name][codes < 0])[:MAX_SHOWN].tolist()
            raise ValueError(f"categorical column {name!r} has values outside its list: {bad}")
        categorical[:, index] = codes
    return numeric.astype(np.float32), categorical


def load_table(path: str | Path, spec: FeatureSpec) -> pd.DataFrame:
    """Read a ``.csv``, ``.csv.gz`` or ``.parquet`` file, validate it with ``spec``, return it.

    Categorical columns are read as strings (so a vocabulary like ``("1", "2")`` matches).
    Raises ``ValueError`` for another suffix or when :meth:`FeatureSpec.validate` fails.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        df = pd.read_csv(path, dtype={column: "string" for column in spec.categorical})
    elif name.endswith((".parquet", ".pq")):
        df = pd.read_parquet(path)
        for column in spec.categorical:
            if column in df.columns and not pd.api.types.is_string_dtype(df[column]):
                df[column] = df[column].astype("string")
    else:
        raise ValueError(f"unsupported table format {path.name!r}: use .csv, .csv.gz or .parquet")
    spec.validate(df)
    return df


def time_ordered_split(
    df: pd.DataFrame,
    spec: FeatureSpec,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cut ``df`` into train, validation, test in time order (no shuffling).

    Rows are stably sorted by ``spec.time_column`` (file order is kept when it is ``None``), then
    the first ``round(f0 * N)`` rows are train, the next ``round(f1 * N)`` validation and the rest
    test. Every train time is <= every validation time <= every test time (rows sharing a
    timestamp may straddle a cut). Each part gets a fresh 0..n-1 index.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    if not np.isclose(sum(fractions), 1.0, atol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {sum(fractions)}")
    if spec.time_column is not None:
        if spec.time_column not in df.columns:
            raise ValueError(f"missing column(s) {[spec.time_column]}")
        ordered = df.sort_values(spec.time_column, kind="stable")
    else:
        ordered = df
    ordered = ordered.reset_index(drop=True)
    n_rows = len(ordered)
    n_train = round(fractions[0] * n_rows)
    n_validation = min(round(fractions[1] * n_rows), n_rows - n_train)
    cut = n_train + n_validation
    return (
        ordered.iloc[:n_train].reset_index(drop=True),
        ordered.iloc[n_train:cut].reset_index(drop=True),
        ordered.iloc[cut:].reset_index(drop=True),
    )
