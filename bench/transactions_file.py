"""``python -m bench.transactions_file --rows 5000000 --out PATH``: a big simulated Parquet file.

Written chunk by chunk (``simulate_transactions`` with one seed per chunk, ids offset to stay
unique), so memory stays bounded by one chunk whatever ``--rows`` is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.progress import progress_bar
from training.fraud.simulator import simulate_transactions


def write_transactions(path: Path, rows: int, chunk: int, quiet: bool) -> None:
    """Write ``rows`` simulated transactions to ``path`` in chunks of ``chunk`` rows."""
    writer = None
    with progress_bar(rows, "transactions", quiet, unit="row") as bar:
        for start in range(0, rows, chunk):
            frame = simulate_transactions(min(chunk, rows - start), seed=start // chunk)
            frame["transaction_id"] += start
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=128 * 1024)
            bar.update(len(frame))
    if writer is not None:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transactions_file", description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows to write")
    parser.add_argument("--chunk", type=int, default=250_000, help="rows simulated at a time")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    write_transactions(args.out, args.rows, args.chunk, args.quiet)
    print(f"wrote {args.rows} transactions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
