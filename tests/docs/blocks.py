"""The code blocks of README.md and docs/*.md, and the markers that say how the docs test treats them.

A fenced block is code when its language is `bash`, `sh`, `shell`, `console` (only its `$ ` lines
are commands) or `python`/`py`. Every fence must name a language (`text` for output, trees and
synopses), so no command hides in an unlabeled block.

A marker is an HTML comment on the line right before the fence (invisible when rendered):

    <!-- doc-test: skip: needs Docker -->        not run; the reason is required
    <!-- doc-test: fresh -->                     run on a new, empty repository (and the blocks after it)
    <!-- doc-test: setup: catalogue -->          before the block: the signed catalogue and model digits v1
    <!-- doc-test: checkout -->                  run in the project's checkout (a `make` target), not the scratch

Every other code block runs, in order, in one scratch directory per document, against one repository
per document (see test_documented_commands.py for the placeholders it fills).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
# Blocks that are not commands: output, trees, synopses (`text`) and files shown as they are. Any other
# language is refused, so no command hides in a block the test neither runs nor knows (`zsh`, `pwsh`).
NOT_CODE = {"text", "yaml", "json", "toml"}
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*(skip|fresh|setup|checkout)\s*(?::\s*(.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None = None  # skip, fresh, setup or checkout
    argument: str = ""  # skip's reason, setup's name

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def is_code(self) -> bool:
        return self.language in SHELL | PYTHON


def blocks(document: Path) -> list[Block]:
    """Every fenced block of `document`, with the marker before it."""
    found: list[Block] = []
    lines = document.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        marker = _MARKER.match(lines[i - 1].strip()) if i else None
        found.append(
            Block(
                document,
                i + 1,
                language,
                "\n".join(lines[i + 1 : end]) + "\n",
                marker.group(1) if marker else None,
                (marker.group(2) or "") if marker else "",
            )
        )
        i = end + 1
    return found


def console_commands(text: str) -> str:
    """The commands of a `console` block: its `$ ` lines (and their continuation lines)."""
    commands: list[str] = []
    continued = False
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif continued:
            commands.append(line)
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"
