"""What the commands write: a table or key/value list for people, or JSON for scripts, on stdout;
progress bars and log lines on stderr, so stdout stays one document (or a file's bytes).

Tables show sizes in KiB/MiB/GiB (JSON keeps the byte counts) and fit the terminal's width
(COLUMNS, else the terminal's); written to a file or a pipe they are not cut at all."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from flrepo.logs import StderrHandler


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _cell(item: dict[str, Any], column: str) -> str:
    value: Any = item
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if column == "sha256":
        return str(value)[:12]
    if column == "size" and isinstance(value, int):
        return human_size(value)
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def human_size(size: int) -> str:
    """Bytes for people: 512 B, 1.4 KiB, 50.0 MiB, 2.3 GiB (binary units, as `ls -h`)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


# Width for output that goes to a file or a pipe: nothing is cut, each row stays one line.
UNBOUNDED = 100_000


def console(to_stderr: bool = False) -> Console:
    """A console as wide as the terminal (COLUMNS wins, as shutil.get_terminal_size reads it); rich
    shrinks and wraps the table's columns to fit. Not a terminal and no COLUMNS: as wide as needed."""
    stream = sys.stderr if to_stderr else sys.stdout
    fits = "COLUMNS" in os.environ or stream.isatty()
    width = shutil.get_terminal_size().columns if fits else UNBOUNDED
    return Console(soft_wrap=False, stderr=to_stderr, width=width)


def emit(args: argparse.Namespace, value: Any, columns: tuple[str, ...] = (), to_stderr: bool = False) -> None:
    """Print `value` as JSON (scripts) or as a table / key-value list (people); on stderr when
    stdout carries a file."""
    if args.output == "json":
        (sys.stderr if to_stderr else sys.stdout).write(json.dumps(_plain(value), indent=2, default=str) + "\n")
        return
    out = console(to_stderr)
    if isinstance(value, list):
        table = Table(*(c.split(".")[-1] for c in columns))
        for column in table.columns:
            column.overflow = "fold"  # a narrow terminal wraps a long name rather than cutting it
        for item in value:
            table.add_row(*(_cell(_plain(item), c) for c in columns))
        out.print(table)
        total = getattr(value, "total", None)
        if total is not None and total != len(value):
            out.print(f"{len(value)} of {total} shown (use --limit/--offset)")
        return
    table = Table.grid(padding=(0, 2))
    for key, item in _plain(value).items():
        shown = f"{human_size(item)} ({item} bytes)" if key == "size" and isinstance(item, int) else item
        table.add_row(
            f"[bold]{key}[/]", json.dumps(shown, default=str) if isinstance(shown, dict | list) else str(shown)
        )
    out.print(table)


@contextmanager
def progress_bar(args: argparse.Namespace, description: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on stderr while a file moves (shown on a terminal or with --progress)."""
    console = Console(stderr=True)
    show = args.progress if args.progress is not None else console.is_terminal
    if not show:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def log_to_stderr() -> None:
    """Warnings (e.g. an unsigned upload) as `flrepo: ...` lines on stderr, unless the process
    (an embedding program, a test runner) has configured logging already."""
    root = logging.getLogger()
    if not root.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("flrepo: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("FLREPO_LOG_LEVEL", "WARNING").upper())


def quiet_http_logs() -> None:
    """httpx logs every request at INFO ("HTTP Request: GET ... 200 OK"), a wall of noise in a
    terminal: its loggers stay at WARNING unless FLREPO_LOG_LEVEL=DEBUG asks for everything."""
    debug = os.environ.get("FLREPO_LOG_LEVEL", "").strip().upper() == "DEBUG"
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)


def field_problems(detail: Any) -> list[tuple[str, str]]:
    """(field, message) for each entry of a validation `detail` (a 422's list, or the SDK's own
    check before sending); empty when `detail` is not such a list."""
    if not isinstance(detail, list) or not all(isinstance(item, dict) and "msg" in item for item in detail):
        return []
    return [
        (".".join(str(p) for p in item.get("loc", ()) if p != "body") or "(body)", str(item["msg"])) for item in detail
    ]


def error_text(command: str, exc: Exception) -> str:
    """What a failed command writes on stderr: one line, or, for refused fields, one line per field
    (an unknown field named with the one it probably meant)."""
    problems = field_problems(getattr(exc, "detail", None))
    if not problems:
        return f"flrepo {command}: {exc}\n"
    status = getattr(exc, "status", None)
    head = f"the server refused the request ({status})" if status else "refused before sending"
    request_id = getattr(exc, "request_id", None)
    lines = [f"flrepo {command}: {head}, {len(problems)} problem(s):"]
    lines += [f"  {where}: {message}" for where, message in problems]
    if request_id:
        lines.append(f"  (request id {request_id})")
    return "\n".join(lines) + "\n"
