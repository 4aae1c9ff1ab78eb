"""`flrepo models|results|strategies|transformations|tasks ...`: the repository from a terminal.

Every command talks to a running repository through the SDK (flrepo.client) and is written once
over the Collection specs of flrepo.cli.collections. Output is a table for people or JSON for
scripts (`--output json`); progress bars go to stderr; the exit code says what happened
(flrepo.cli.exit_codes, also in docs/CLI.md) so scripts can branch on it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from flrepo.cli.collections import COLLECTIONS, Collection, Keys, key_help
from flrepo.cli.exit_codes import OK, UsageError, WouldOverwrite, exit_code
from flrepo.cli.options import add_global_options
from flrepo.cli.output import emit, error_text, log_to_stderr, progress_bar
from flrepo.client import Conflict, NotFound, RepositoryClient, RepositoryError, SignatureError
from flrepo.client.transfer import in_folder
from flrepo.signing import verify_digest


def _progress(parser: argparse.ArgumentParser) -> None:
    """--progress/--no-progress: only on the commands that move a file."""
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show bars")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


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


def _cancel(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    emit(args, repo.cancel_task(args.task_id, args.message))


def _upload(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    keys = _keys(spec, args)
    source: Path | BinaryIO
    if args.file == "-":  # a pipe is sent chunked, as it comes
        source, label = sys.stdin.buffer, args.filename or "stdin.bin"
        signing = spec.signed and not args.unsigned and repo.keyring.wants_to_sign
        if signing and not source.seekable():
            raise UsageError("a signed upload reads its file twice: give a path or redirect a file, not a pipe")
    else:
        source = Path(args.file)
        label = source.name
        if not source.is_file():
            raise UsageError(f"{source}: no such file")
    if args.create:
        _create_unless_there(spec, repo, keys, args)
    with progress_bar(args, f"upload {label}") as progress:
        options: dict[str, Any] = {"filename": args.filename or label, "progress": progress}
        try:
            if spec.signed == "strategy":
                stored = repo.upload_strategy(keys[0], source, sign=False if args.unsigned else None, **options)
            elif spec.signed == "transformation":
                stored = repo.upload_transformation(keys[0], source, sign=False if args.unsigned else None, **options)
            elif spec.command == "results":
                stored = repo.upload_weights(keys[0], keys[1], keys[2], args.configuration_id, source, **options)
            else:
                stored = repo.upload_model(keys[0], keys[1], source, **options)
        except NotFound as exc:
            if args.create:
                raise
            needs = f" {spec.create_needs}" if spec.create_needs else ""
            raise NotFound(
                f"{exc}; add --create{needs} to register the {spec.noun} with its file",
                status=exc.status,
                detail=exc.detail,
                request_id=exc.request_id,
            ) from exc
    emit(args, {"uploaded": str(args.file), "size": stored.size, "sha256": stored.sha256})


def _create_unless_there(spec: Collection, repo: RepositoryClient, keys: Keys, args: argparse.Namespace) -> None:
    """`upload --create`: register the item from the create options unless it exists."""
    try:
        spec.show(repo, keys)
        return
    except NotFound:
        pass
    missing = [flag for flag in spec.create_needs.split() if flag.startswith("--")]
    if any(getattr(args, flag[2:].replace("-", "_"), None) is None for flag in missing):
        raise UsageError(f"{spec.noun} {'/'.join(keys)} does not exist: --create needs {spec.create_needs}")
    try:
        spec.create(repo, keys, args)
    except Conflict:
        pass  # created meanwhile by someone else: upload to it all the same


def _download(spec: Collection, repo: RepositoryClient, args: argparse.Namespace) -> None:
    keys = _keys(spec, args)
    assert spec.file_path is not None
    item = spec.show(repo, keys)
    size, sha = getattr(item, "size", None), getattr(item, "sha256", None)
    if size is None:
        raise NotFound(f"{spec.noun} {'/'.join(keys)} has no file yet")
    meta: dict[str, Any] = getattr(item, "meta", {})
    if getattr(args, "allow_legacy_hmac", False):
        repo.keyring = repo.keyring.allowing_legacy_hmac()
    if spec.signed and sha:
        # Fail before moving a byte when the recorded file is not what was signed.
        verify_digest(repo.keyring, spec.signed, keys[0], sha, size, meta, args.allow_unsigned)
    if args.dest == "-":  # bytes go out as they arrive; the exit code says whether they verified
        with progress_bar(args, "download") as progress:
            done = repo.download(spec.file_path(keys), sys.stdout.buffer, progress=progress, resume=False)
        sys.stdout.buffer.flush()
        result = {"path": "-", "size": done.size, "sha256": done.sha256, "verified": True, "up_to_date": False}
        emit(args, result, to_stderr=True)
        return
    # The recorded name came from the server: only its safe base name is used, so a document naming
    # `../../x` or `/etc/x` (restored, written directly, or sent by a hostile server) cannot make this
    # write anywhere but the folder asked for (here, or -o DIR).
    dest = Path(args.dest) if args.dest else Path(".")
    if dest.is_dir():
        dest = in_folder(dest, getattr(item, "filename", None), "-".join(keys))
    if dest.exists() and _up_to_date(spec, repo, keys, dest, args, meta):
        return
    with progress_bar(args, f"download {dest.name}") as progress:
        done = repo.download(spec.file_path(keys), dest, progress=progress, resume=not args.restart)
    if spec.signed:
        try:
            verify_digest(repo.keyring, spec.signed, keys[0], done.sha256, done.size, meta, args.allow_unsigned)
        except SignatureError:
            dest.unlink(missing_ok=True)  # nothing unverified is left where code could load it
            raise
    emit(
        args, {"path": str(done.path), "size": done.size, "sha256": done.sha256, "verified": True, "up_to_date": False}
    )


def _up_to_date(
    spec: Collection, repo: RepositoryClient, keys: Keys, dest: Path, args: argparse.Namespace, meta: dict[str, Any]
) -> bool:
    """`dest` exists: True (and reported) when it is the server's file, which a HEAD names by its
    ETag; WouldOverwrite when it differs, unless --force."""
    assert spec.file_path is not None
    remote = repo.stat_file(spec.file_path(keys))
    with dest.open("rb") as handle:
        local = hashlib.file_digest(handle, "sha256").hexdigest()
    if local == remote.sha256:
        if spec.signed:
            verify_digest(repo.keyring, spec.signed, keys[0], local, remote.size, meta, args.allow_unsigned)
        sys.stderr.write(f"flrepo {spec.command}: {dest} is up to date (sha256 {local[:12]}…), nothing downloaded\n")
        emit(args, {"path": str(dest), "size": remote.size, "sha256": local, "verified": True, "up_to_date": True})
        return True
    if not args.force:
        raise WouldOverwrite(
            f"{dest} exists and is not the server's file (sha256 {local[:12]}…, the server's {remote.sha256[:12]}…): "
            "add --force to replace it, or give another -o"
        )
    return False


def _run(
    action: Callable[[Collection, RepositoryClient, argparse.Namespace], None], spec: Collection
) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        log_to_stderr()
        try:
            with RepositoryClient(args.url, args.api_key or None, timeout=args.timeout) as repo:
                action(spec, repo, args)
        except (RepositoryError, SignatureError, UsageError, WouldOverwrite, OSError, ValueError) as exc:
            sys.stderr.write(error_text(spec.command, exc))
            return exit_code(exc)
        return OK

    return run


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add one subcommand per collection, each with list/show/create/delete (+ upload/download)."""
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common)
    for spec in COLLECTIONS:
        parser = sub.add_parser(
            spec.command, parents=[common], help=f"{spec.command} in a running repository (list, show, create, ...)"
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        _add_metadata_actions(actions, common, spec)
        if spec.file_path is not None:
            _add_upload(actions, common, spec)
            _add_download(actions, common, spec)


def _add_metadata_actions(
    actions: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    spec: Collection,
) -> None:
    """list, show, create, delete (and cancel, for tasks)."""
    listing = actions.add_parser("list", parents=[common], help=f"list {spec.command}")
    listing.add_argument("--limit", type=int, help="most items (default: the server's cap, 1000)")
    listing.add_argument("--offset", type=int, default=0, help="items to skip (default: 0)")
    spec.list_options(listing)
    listing.set_defaults(func=_run(_list, spec))

    show = actions.add_parser("show", parents=[common], help=f"one {spec.noun}'s metadata")
    _key_arguments(show, spec)
    show.set_defaults(func=_run(_show, spec))

    create = actions.add_parser("create", parents=[common], help=f"register a {spec.noun}")
    if spec.command == "tasks":
        create.add_argument(
            "task_id", metavar="TASK_ID", nargs="?", default="-", help="task id (default: the spec's, or generated)"
        )
    else:
        _key_arguments(create, spec)
    spec.create_options(create, False)
    create.set_defaults(func=_run(_create, spec))

    delete = actions.add_parser("delete", parents=[common], help=f"delete a {spec.noun} and its file")
    _key_arguments(delete, spec)
    delete.set_defaults(func=_run(_delete, spec))

    if spec.command == "tasks":
        cancel = actions.add_parser(
            "cancel", parents=[common], help="end a Pending or Running task (Failed, reason Cancelled)"
        )
        _key_arguments(cancel, spec)
        cancel.add_argument("--message", help="why, recorded in the task's condition")
        cancel.set_defaults(func=_run(_cancel, spec))


def _add_upload(
    actions: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    spec: Collection,
) -> None:
    upload = actions.add_parser("upload", parents=[common], help=f"upload (or replace) a {spec.noun}'s file")
    _key_arguments(upload, spec)
    upload.add_argument("file", metavar="FILE", help="the file to upload (streamed); - reads standard input")
    upload.add_argument("--filename", help="name recorded for the file (default: its own)")
    if spec.command == "results":
        upload.add_argument("--configuration-id", default="1", help="must equal the result's")
    if spec.signed:
        upload.add_argument("--unsigned", action="store_true", help="do not sign even if a signing key is configured")
    upload.add_argument(
        "--create", action="store_true", help=f"register the {spec.noun} first if it does not exist (options below)"
    )
    spec.create_options(upload.add_argument_group(f"with --create, for a new {spec.noun}"), True)
    _progress(upload)
    upload.set_defaults(func=_run(_upload, spec))


def _add_download(
    actions: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    spec: Collection,
) -> None:
    download = actions.add_parser("download", parents=[common], help=f"download a {spec.noun}'s file, verified")
    _key_arguments(download, spec)
    download.add_argument(
        "-o", "--dest", help="file or directory (default: the recorded file name, here); - writes standard output"
    )
    download.add_argument("--restart", action="store_true", help="ignore a partial download and start over")
    download.add_argument(
        "--force", action="store_true", help="replace a different existing file (the same file is never fetched)"
    )
    if spec.signed:
        download.add_argument(
            "--allow-unsigned", action="store_true", help="keep the file even without a valid signature"
        )
        download.add_argument(
            "--allow-legacy-hmac",
            action="store_true",
            help="migration: accept an HMAC signature made before Ed25519 (secret in FLREPO_LEGACY_HMAC_KEYS)",
        )
    _progress(download)
    download.set_defaults(func=_run(_download, spec))


def _key_arguments(parser: argparse.ArgumentParser, spec: Collection) -> None:
    for key in spec.keys:
        parser.add_argument(key, metavar=key.upper(), help=key_help(spec, key))
