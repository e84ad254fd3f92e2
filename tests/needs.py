"""What some tests need from the machine (a tool, a permission): without it they are skipped on
a developer's machine and FAIL in CI (``CI`` set), where ``make setup`` must have provided it."""

from __future__ import annotations

import os
import shutil

import pytest


def require(available: bool, what: str) -> None:
    """Go on when ``available``; otherwise skip, or fail when ``CI`` is set."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: a missing tool fails, it is not skipped)")
    pytest.skip(what)


def require_tools(*names: str) -> None:
    """Every command in ``names`` is on ``PATH``."""
    missing = [name for name in names if shutil.which(name) is None]
    require(not missing, f"missing {', '.join(missing)}")
