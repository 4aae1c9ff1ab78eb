"""`flrepo models|results|strategies|transformations|tasks ...`: the repository from a terminal.

Every command talks to a running repository through the SDK (app.client). Output is a table for
people or JSON for scripts (`--output json`); progress bars go to stderr; the exit code says what
happened (EXIT_CODES, also in docs/CLI.md) so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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

from flrepo.client import (
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    NotFound,
    RepositoryClient,
    RepositoryError,
    SignatureError,
    TooLarge,
    Unauthorized,
    Unavailable,
    calls,
)
from flrepo.client.sync import DEFAULT_URL
from flrepo.logs import StderrHandler
from flrepo.signing import NoSigningKey, verify_digest

log = logging.getLogger("flrepo")


class UsageError(Exception):
    """A bad argument the parser could not catch (e.g. a file that does not exist)."""


# Exit codes scripts can rely on (argparse already exits 2 on a usage error).
OK, ERROR, USAGE, NOT_FOUND, CONFLICT, UNAVAILABLE, INTEGRITY, DENIED, TOO_LARGE = range(9)
EXIT_CODES: list[tuple[type[Exception], int]] = [
    (NotFound, NOT_FOUND),
    (Conflict, CONFLICT),
    (Unavailable, UNAVAILABLE),
    (IntegrityError, INTEGRITY),
    (NoSigningKey, USAGE),  # before its base class: a setup problem, not a bad file
    (SignatureError, INTEGRITY),
    (Unauthorized, DENIED),
    (Forbidden, DENIED),
    (TooLarge, TOO_LARGE),
    (Invalid, USAGE),
    (UsageError, USAGE),
]


def exit_code(exc: Exception) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return ERROR


# --- arguments --------------------------------------------------------------------------------


def json_arg(text: str) -> Any:
    """A JSON value given inline, or `@path` to read it from a file."""
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text())
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc


def json_object(text: str) -> dict[str, Any]:
    value = json_arg(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection and output")
    # Left unset, the SDK reads FLREPO_URL / FLREPO_API_KEY (app.client.sync.client_options).
    group.add_argument("--url", help=f"default: FLREPO_URL, else {DEFAULT_URL}")
    group.add_argument("--api-key", help="default: FLREPO_API_KEY")
    group.add_argument("--output", "-O", choices=["table", "json"], default="table", help="default: table")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds per network operation")
    progress = group.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show bars")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


# --- collections ------------------------------------------------------------------------------

Keys = list[str]


@dataclass
class Collection:
    """What differs between the collections; the commands are written once over this."""

    command: str
    noun: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    show: Callable[[RepositoryClient, Keys], BaseModel]
    listing: Callable[[RepositoryClient, argparse.Namespace], calls.Page[Any]]
    create: Callable[[RepositoryClient, Keys, argparse.Namespace], BaseModel]
    create_options: Callable[[argparse.ArgumentParser], None]
    delete: Callable[[RepositoryClient, Keys], None]
    file_path: Callable[[Keys], str] | None = None
    upload_path: Callable[[Keys, argparse.Namespace], str] | None = None
    list_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    signed: str | None = None  # the artifact kind whose signature downloads check


def _model_create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--library", required=True, help="the library local executions train with, e.g. numpy")
    parser.add_argument("--description")
    parser.add_argument("--meta", type=json_object, default={}, help="more metadata: JSON object or @file.json")


def _model_list_options(parser: argparse.ArgumentParser) -> None:
    trained = parser.add_mutually_exclusive_group()
    trained.add_argument("--trained", dest="trained", action="store_true", default=None, help="with training results")
    trained.add_argument("--untrained", dest="trained", action="store_false", help="without training results")
    trained.add_argument("--available", action="store_true", help="only models with a file, newest first")


def _list_models(repo: RepositoryClient, args: argparse.Namespace) -> calls.Page[Any]:
    if args.available:
        return repo.available_models(limit=args.limit, offset=args.offset)
    return repo.list_models(trained=args.trained, limit=args.limit, offset=args.offset)


def _create_model(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    meta = dict(args.meta)
    if args.description:
        meta["description"] = args.description
    return repo.create_model(keys[0], keys[1], args.library, **meta)


def _result_create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=json_object, required=True, help="metrics: JSON object or @file.json")
    parser.add_argument("--configuration-id", default="1")


def _result_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs=2, metavar=("NAME", "VERSION"), help="only this model's results")


def _list_results(repo: RepositoryClient, args: argparse.Namespace) -> calls.Page[Any]:
    if args.model:
        name, version = args.model
        return repo.list_model_training_results(name, version, limit=args.limit, offset=args.offset)
    return repo.list_training_results(limit=args.limit, offset=args.offset)


def _strategy_create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--meta", type=json_object, default={}, help="JSON object or @file.json")


def _transformation_create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--parameter-types", type=json_object, default={}, help='e.g. {"categories": "int"}')
    parser.add_argument("--default-values", type=json_object, default={}, help='e.g. {"categories": 10}')
    parser.add_argument("--outputs", type=json_arg, default=[], help='e.g. ["np.ndarray", "np.ndarray"]')
    parser.add_argument("--needs", type=json_object, default={}, help="storage, RAM, GPU, ... as a JSON object")
    parser.add_argument("--meta", type=json_object, default={}, help="JSON object or @file.json")


def _create_transformation(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    return repo.create_transformation(
        keys[0],
        description=args.description,
        parameter_types=args.parameter_types,
        default_values=args.default_values,
        outputs=args.outputs,
        needs=args.needs,
        meta=args.meta,
    )


def _task_create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=json_object, required=True, help="the task: JSON object or @task.json")


def _task_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", choices=["Pending", "Running", "Succeeded", "Failed"])


def _create_task(repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> BaseModel:
    spec = dict(args.spec)
    if keys[0] != "-":
        spec["task_id"] = keys[0]
    return repo.create_task(spec)


COLLECTIONS = [
    Collection(
        "models",
        "model",
        ("name", "version"),
        ("model_name", "model_version", "meta.library", "size", "sha256", "uploaded_at"),
        show=lambda repo, k: repo.get_model(k[0], k[1]),
        listing=_list_models,
        create=_create_model,
        create_options=_model_create_options,
        delete=lambda repo, k: repo.delete_model(k[0], k[1]),
        file_path=lambda k: calls.model_file(k[0], k[1]),
        upload_path=lambda k, args: calls.model_file(k[0], k[1]),
        list_options=_model_list_options,
    ),
    Collection(
        "results",
        "training result",
        ("model_name", "model_version", "training_id"),
        ("model_name", "model_version", "training_id", "configuration_id", "results", "size"),
        show=lambda repo, k: repo.get_training_result(k[0], k[1], k[2]),
        listing=_list_results,
        create=lambda repo, k, a: repo.create_training_result(k[0], k[1], k[2], a.results, a.configuration_id),
        create_options=_result_create_options,
        delete=lambda repo, k: repo.delete_training_result(k[0], k[1], k[2]),
        file_path=lambda k: calls.weights_download(k[0], k[1], k[2]),
        upload_path=lambda k, args: calls.weights_upload(k[0], k[1], k[2], args.configuration_id),
        list_options=_result_list_options,
    ),
    Collection(
        "strategies",
        "strategy",
        ("name",),
        ("strategy_name", "strategy_description", "meta.class", "meta.key_id", "size", "sha256"),
        show=lambda repo, k: repo.get_strategy(k[0]),
        listing=lambda repo, a: repo.list_strategies(limit=a.limit, offset=a.offset),
        create=lambda repo, k, a: repo.create_strategy(k[0], a.description, a.meta),
        create_options=_strategy_create_options,
        delete=lambda repo, k: repo.delete_strategy(k[0]),
        file_path=lambda k: calls.strategy_file(k[0]),
        signed="strategy",
    ),
    Collection(
        "transformations",
        "transformation",
        ("id",),
        ("id", "description", "outputs", "meta.key_id", "size", "sha256"),
        show=lambda repo, k: repo.get_transformation(k[0]),
        listing=lambda repo, a: repo.list_transformations(limit=a.limit, offset=a.offset),
        create=_create_transformation,
        create_options=_transformation_create_options,
        delete=lambda repo, k: repo.delete_transformation(k[0]),
        file_path=lambda k: calls.transformation_file(k[0]),
        signed="transformation",
    ),
    Collection(
        "tasks",
        "task",
        ("task_id",),
        ("task_id", "phase", "current_round", "rounds", "model.model_name", "strategy.strategy_name"),
        show=lambda repo, k: repo.get_task(k[0]),
        listing=lambda repo, a: repo.list_tasks(phase=a.phase, limit=a.limit, offset=a.offset),
        create=_create_task,
        create_options=_task_create_options,
        delete=lambda repo, k: repo.delete_task(k[0]),
        list_options=_task_list_options,
    ),
]


# --- output -----------------------------------------------------------------------------------


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
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def emit(args: argparse.Namespace, value: Any, columns: tuple[str, ...] = (), to_stderr: bool = False) -> None:
    """Print `value` as JSON (scripts) or as a table / key-value list (people); on stderr when
    stdout carries a file."""
    if args.output == "json":
        (sys.stderr if to_stderr else sys.stdout).write(json.dumps(_plain(value), indent=2, default=str) + "\n")
        return
    console = Console(soft_wrap=False, stderr=to_stderr)
    if isinstance(value, list):
        table = Table(*(c.split(".")[-1] for c in columns))
        for item in value:
            table.add_row(*(_cell(_plain(item), c) for c in columns))
        console.print(table)
        total = getattr(value, "total", None)
        if total is not None and total != len(value):
            console.print(f"{len(value)} of {total} shown (use --limit/--offset)")
        return
    table = Table.grid(padding=(0, 2))
    for key, item in _plain(value).items():
        table.add_row(f"[bold]{key}[/]", json.dumps(item, default=str) if isinstance(item, dict | list) else str(item))
    console.print(table)


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


# --- commands ---------------------------------------------------------------------------------


def _keys(spec: Collection, args: argparse.Namespace) -> Keys:
    return [getattr(args, key) for key in spec.keys]


def _list(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    emit(args, spec.listing(repo, args), spec.columns)


def _show(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    emit(args, spec.show(repo, _keys(spec, args)))


def _create(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    emit(args, spec.create(repo, _keys(spec, args), args))


def _delete(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    keys = _keys(spec, args)
    spec.delete(repo, keys)
    emit(args, {"deleted": spec.noun, "key": keys})


def _upload(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    keys = _keys(spec, args)
    source: Path | BinaryIO
    if args.file == "-":  # a pipe is sent chunked, as it comes
        source, label = sys.stdin.buffer, args.filename or "stdin.bin"
        signing = spec.signed and not args.unsigned and repo.keyring.signing_id
        if signing and not source.seekable():
            raise UsageError("a signed upload reads its file twice: give a path or redirect a file, not a pipe")
    else:
        source = Path(args.file)
        label = source.name
        if not source.is_file():
            raise UsageError(f"{source}: no such file")
    with progress_bar(args, f"upload {label}") as progress:
        options: dict[str, Any] = {"filename": args.filename or label, "progress": progress}
        if spec.signed == "strategy":
            repo.upload_strategy(keys[0], source, sign=False if args.unsigned else None, **options)
        elif spec.signed == "transformation":
            repo.upload_transformation(keys[0], source, sign=False if args.unsigned else None, **options)
        else:
            assert spec.upload_path is not None
            repo.upload(spec.upload_path(keys, args), source, **options)
    item = spec.show(repo, keys)
    emit(
        args, {"uploaded": str(args.file), "size": getattr(item, "size", None), "sha256": getattr(item, "sha256", None)}
    )


def _download(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    keys = _keys(spec, args)
    assert spec.file_path is not None
    item = spec.show(repo, keys)
    size, sha = getattr(item, "size", None), getattr(item, "sha256", None)
    if size is None:
        raise NotFound(f"{spec.noun} {'/'.join(keys)} has no file yet")
    meta: dict[str, Any] = getattr(item, "meta", {})
    if spec.signed and sha:
        # Fail before moving a byte when the recorded file is not what was signed.
        verify_digest(repo.keyring, spec.signed, keys[0], sha, size, meta, args.allow_unsigned)
    if args.dest == "-":  # bytes go out as they arrive; the exit code says whether they verified
        with progress_bar(args, "download") as progress:
            done = repo.download(spec.file_path(keys), sys.stdout.buffer, progress=progress, resume=False)
        sys.stdout.buffer.flush()
        emit(args, {"path": "-", "size": done.size, "sha256": done.sha256, "verified": True}, to_stderr=True)
        return
    name = getattr(item, "filename", None) or "-".join(keys)
    dest = Path(args.dest or name)
    if dest.is_dir():
        dest = dest / name
    with progress_bar(args, f"download {dest.name}") as progress:
        done = repo.download(spec.file_path(keys), dest, progress=progress, resume=not args.restart)
    if spec.signed:
        try:
            verify_digest(repo.keyring, spec.signed, keys[0], done.sha256, done.size, meta, args.allow_unsigned)
        except SignatureError:
            dest.unlink(missing_ok=True)  # nothing unverified is left where code could load it
            raise
    emit(args, {"path": str(done.path), "size": done.size, "sha256": done.sha256, "verified": True})


def _log_to_stderr() -> None:
    """Warnings (e.g. an unsigned upload) as `flrepo: ...` lines on stderr, unless the process
    (an embedding program, a test runner) has configured logging already."""
    root = logging.getLogger()
    if not root.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("flrepo: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("FLREPO_LOG_LEVEL", "WARNING").upper())


def _run(
    action: Callable[[Collection, RepositoryClient, argparse.Namespace], None], spec: Collection
) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        _log_to_stderr()
        try:
            with RepositoryClient(args.url, args.api_key or None, timeout=args.timeout) as repo:
                action(spec, repo, args)
        except (RepositoryError, SignatureError, UsageError, OSError, ValueError) as exc:
            sys.stderr.write(f"flrepo {spec.command}: {exc}\n")
            return exit_code(exc)
        return OK

    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add one subcommand per collection, each with list/show/create/delete (+ upload/download)."""
    common = argparse.ArgumentParser(add_help=False)
    _common(common)
    for spec in COLLECTIONS:
        parser = sub.add_parser(spec.command, help=f"{spec.command} in a running repository (list, show, create, ...)")
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        listing = actions.add_parser("list", parents=[common], help=f"list {spec.command}")
        listing.add_argument("--limit", type=int, help="most items (default: the server's cap, 1000)")
        listing.add_argument("--offset", type=int, default=0)
        spec.list_options(listing)
        listing.set_defaults(func=_run(_list, spec))

        show = actions.add_parser("show", parents=[common], help=f"one {spec.noun}'s metadata")
        _key_arguments(show, spec.keys)
        show.set_defaults(func=_run(_show, spec))

        create = actions.add_parser("create", parents=[common], help=f"register a {spec.noun}")
        if spec.command == "tasks":
            create.add_argument("task_id", nargs="?", default="-", help="task id (default: the spec's, or generated)")
        else:
            _key_arguments(create, spec.keys)
        spec.create_options(create)
        create.set_defaults(func=_run(_create, spec))

        delete = actions.add_parser("delete", parents=[common], help=f"delete a {spec.noun} and its file")
        _key_arguments(delete, spec.keys)
        delete.set_defaults(func=_run(_delete, spec))

        if spec.file_path is None:
            continue
        upload = actions.add_parser("upload", parents=[common], help=f"upload (or replace) a {spec.noun}'s file")
        _key_arguments(upload, spec.keys)
        upload.add_argument("file", help="the file to upload (streamed); - reads standard input")
        upload.add_argument("--filename", help="name recorded for the file (default: its own)")
        if spec.command == "results":
            upload.add_argument("--configuration-id", default="1", help="must equal the result's")
        if spec.signed:
            upload.add_argument("--unsigned", action="store_true", help="do not sign even if FLREPO_SIGNING_KEY is set")
        upload.set_defaults(func=_run(_upload, spec))

        download = actions.add_parser("download", parents=[common], help=f"download a {spec.noun}'s file, verified")
        _key_arguments(download, spec.keys)
        download.add_argument(
            "-o", "--dest", help="file or directory (default: the recorded file name, here); - writes standard output"
        )
        download.add_argument("--restart", action="store_true", help="ignore a partial download and start over")
        if spec.signed:
            download.add_argument(
                "--allow-unsigned", action="store_true", help="keep the file even without a valid signature"
            )
        download.set_defaults(func=_run(_download, spec))


def _key_arguments(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    for key in keys:
        parser.add_argument(key)
