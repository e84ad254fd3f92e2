"""Training arithmetic: bfloat16 autocast where the CPU computes it natively, fp32 elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path

PRECISION_CHOICES = ("auto", "bf16", "fp32")


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where autocast pays."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(precision: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """``--precision``: bf16, fp32, or auto (bf16 where the CPU has it natively)."""
    return precision == "bf16" or (precision == "auto" and cpu_has_native_bf16(cpuinfo))


def add_precision_argument(parser: argparse.ArgumentParser, autocast: str) -> None:
    """``--precision auto|bf16|fp32``; ``autocast`` says what bf16 applies to."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help=f"training arithmetic: bf16 autocast for {autocast}, fp32, or auto (bf16 where the "
        "CPU has native bfloat16, fp32 elsewhere); evaluation and export are fp32",
    )
