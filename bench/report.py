"""The side-by-side bench's figures: JSON (every pass), a markdown table (mean of the passes,
ratio to the faster Triton) and a PNG chart (rows/s per workload and concurrency)."""

from __future__ import annotations

import json
import os
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np


def summarise(cells: list[dict]) -> list[dict]:
    """One row per (workload, concurrency, server): passes averaged, ratio to the faster
    Triton configuration of the same workload and concurrency."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for cell in cells:
        grouped[(cell["workload"], cell["concurrency"], cell["server"])].append(cell)
    rows = []
    for (workload, concurrency, server), runs in grouped.items():
        rows.append(
            {
                "workload": workload,
                "concurrency": concurrency,
                "server": server,
                "rows_per_second": round(float(np.mean([r["rows_per_second"] for r in runs])), 1),
                "p50_ms": round(float(np.mean([r["p50_ms"] for r in runs])), 2),
                "p99_ms": round(float(np.mean([r["p99_ms"] for r in runs])), 2),
                "non_2xx": sum(r["non_2xx"] for r in runs),
            }
        )
    best_triton: dict[tuple, float] = {}
    for row in rows:
        if row["server"].startswith("Triton"):
            key = (row["workload"], row["concurrency"])
            best_triton[key] = max(best_triton.get(key, 0.0), row["rows_per_second"])
    for row in rows:
        triton = best_triton.get((row["workload"], row["concurrency"]))
        row["ratio_to_triton"] = round(row["rows_per_second"] / triton, 3) if triton else None
    return rows


def markdown(rows: list[dict], skipped: dict[str, dict[str, str]], busy: str | None) -> str:
    lines = [
        "| workload | conc. | server | rows/s | p50 ms | p99 ms | ratio to Triton | non-2xx |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ratio = f"{row['ratio_to_triton']:.2f}x" if row["ratio_to_triton"] is not None else ""
        lines.append(
            f"| {row['workload']} | {row['concurrency']} | {row['server']} | "
            f"{row['rows_per_second']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{ratio} | {row['non_2xx']} |"
        )
    for server, reasons in skipped.items():
        for workload, why in reasons.items():
            lines.append(f"\n{server}, {workload}: skipped ({why}).")
    if busy:
        lines.append(f"\nMeasured on a busy machine ({busy}): compare cells of one run only.")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    """Rows/s per server, one panel per workload, grouped by concurrency (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    figure, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 5), squeeze=False)
    for axis, workload in zip(axes[0], workloads, strict=True):
        mine = [r for r in rows if r["workload"] == workload]
        levels = sorted({r["concurrency"] for r in mine})
        width = 0.8 / len(servers)
        for index, server in enumerate(servers):
            values = {r["concurrency"]: r["rows_per_second"] for r in mine if r["server"] == server}
            x = np.arange(len(levels)) + index * width
            axis.bar(x, [values.get(c, 0) for c in levels], width, label=server)
        axis.set_xticks(np.arange(len(levels)) + 0.4 - width / 2, [f"c={c}" for c in levels])
        axis.set_yscale("log")
        axis.set_title(workload)
        axis.set_ylabel("rows/s")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(
    out: Path, cells: list[dict], skipped: dict[str, dict[str, str]], busy: str | None
) -> list[dict]:
    """``out``.json, ``out``.md and ``out``.png; returns the summary rows."""
    rows = summarise(cells)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "busy": busy}
    document = {"machine": machine, "cells": cells, "summary": rows, "skipped": skipped}
    out.with_suffix(".json").write_text(json.dumps(document, indent=2))
    out.with_suffix(".md").write_text(markdown(rows, skipped, busy))
    chart(rows, out.with_suffix(".png"))
    return rows
