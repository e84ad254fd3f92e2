"""Read the repository's Dockerfile into stages of (instruction, arguments) for the deploy tests."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The stage's own ENV settings (``KEY=VALUE`` form)."""
        values: dict[str, str] = {}
        for instruction, arguments in self.instructions:
            if instruction == "ENV":
                for pair in shlex.split(arguments):
                    key, _, value = pair.partition("=")
                    values[key] = value
        return values

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comment lines dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    return [line for line in lines if line]


def parse(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments, flags=re.IGNORECASE)
            stages.append(Stage(name=match.group(2) or "", base=match.group(1)))
        elif not stages and instruction == "ARG":
            key, _, value = arguments.partition("=")
            global_args[key] = value
        elif stages:
            stages[-1].instructions.append((instruction, arguments))
    return global_args, stages


def stage(name: str, path: Path = DOCKERFILE) -> Stage:
    return next(s for s in parse(path)[1] if s.name == name)
