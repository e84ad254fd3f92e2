"""The docs say what the code does: the settings table, every environment variable, the files
that links and commands name."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import settings_table

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()
SOURCES = [
    path
    for folder in ("core", "models", "service", "training", "bench")
    for path in (ROOT / folder).rglob("*.py")
]


def test_the_settings_table_is_the_settings_model() -> None:
    assert settings_table() in OPERATIONS, "regenerate it with `python -m service.config`"


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    used = {
        name
        for path in SOURCES
        for name in re.findall(r"\b(DLSERVE_[A-Z][A-Z_]+)\b", path.read_text())
    }
    documented = set(re.findall(r"`(DLSERVE_[A-Z_]+)`", OPERATIONS))
    assert used, "found no variable: the scan is broken"
    assert used <= documented, sorted(used - documented)


def test_every_relative_link_in_the_docs_points_to_a_file() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
