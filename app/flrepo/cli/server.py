"""`flrepo serve`, `flrepo dump|restore`, `flrepo migrate` and `flrepo keys create`: the commands that run or
administer the service itself. They need the extra `server`, so its modules are imported only
inside them: the rest of the CLI works with the core install."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

from flrepo.cli.exit_codes import INTEGRITY, OK
from flrepo.cli.extras import require_extra
from flrepo.logs import configure_logging

EMBEDDED_DB_TIMEOUT_MS = 10_000


def _serve(args: argparse.Namespace) -> int:
    require_extra("server")
    import uvicorn

    from flrepo.server import serving
    from flrepo.server.embedded import EmbeddedMongo
    from flrepo.server.main import create_app
    from flrepo.server.settings import Settings

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    embedded: EmbeddedMongo | None = None
    if args.embedded:
        data = Path(args.data_dir).resolve()
        try:
            embedded = EmbeddedMongo(data / "ferretdb", log_file=data / "ferretdb.log").start()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            sys.stderr.write(f"flrepo serve --embedded: {exc}\n")
            return 1
        overrides["mongodb_url"] = embedded.url
        if "FLREPO_DB_TIMEOUT_MS" not in os.environ:
            # The embedded store (SQLite) can take seconds for one large write on a busy machine.
            overrides["db_timeout_ms"] = EMBEDDED_DB_TIMEOUT_MS
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format == "json")
    log = logging.getLogger("flrepo")
    if embedded:
        log.info("embedded FerretDB (SQLite) at %s, data in %s", embedded.url, embedded.data_dir)
    log.info(
        "Swagger UI at http://%s:%d/docs", "127.0.0.1" if settings.host == "0.0.0.0" else settings.host, settings.port
    )
    try:
        # One configuration for every way the service runs (bounded headers, timeouts): flrepo.server.serving.
        uvicorn.Server(serving.config(create_app(settings), settings)).run()
    finally:
        if embedded:
            embedded.stop()
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    require_extra("server")
    from flrepo.server.auth import Role, append_key, new_key

    key_id = args.id or f"{args.role}-{secrets.token_hex(3)}"
    key, entry = new_key(key_id, Role.parse(args.role))
    if args.file:
        try:
            append_key(Path(args.file), entry)
        except ValueError as exc:
            sys.stderr.write(f"flrepo keys: {exc}\n")
            return 1
        sys.stderr.write(f"added key {key_id!r} ({args.role}) to {args.file}; restart or redeploy the API to load it\n")
    else:
        sys.stderr.write("add the entry to the file named by FLREPO_API_KEYS_FILE; the key is not stored anywhere\n")
    # The key is shown once; only its hash is kept.
    sys.stdout.write(f"key:   {key}\nentry: {json.dumps(entry)}\n")
    return 0


def _keys_signing_create(args: argparse.Namespace) -> int:
    require_extra("signing")
    from flrepo.signing import encode_key, new_key_pair, private_key_pem

    key_id = args.id or f"publisher-{secrets.token_hex(3)}"
    folder = Path(args.dir)
    private_path, public_path = folder / f"{key_id}.key", folder / f"{key_id}.pub"
    if private_path.exists() or public_path.exists():
        sys.stderr.write(f"flrepo keys signing-create: {private_path} or {public_path} exists; not overwriting\n")
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    private, public = new_key_pair()
    # The private key is created readable by its owner only, before a byte is written.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(private))
    entry = f"{key_id}:{encode_key(public)}"
    public_path.write_text(entry + "\n")
    sys.stderr.write(
        f"wrote {private_path} (private: publishers only) and {public_path} (public: every collector and local "
        "execution)\n"
    )
    sys.stdout.write(
        f"publishers:                      FLREPO_SIGNING_KEY_FILE={private_path}  (key id {key_id})\n"
        f"collectors and local executions: FLREPO_TRUSTED_KEYS={entry}\n"
    )
    return 0


def _dump_or_restore(args: argparse.Namespace) -> int:
    require_extra("server")
    from pymongo.errors import PyMongoError

    from flrepo.server import backup as archive_ops
    from flrepo.server.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format == "json")
    log = logging.getLogger("flrepo")
    archive = Path(args.archive)
    try:
        if args.command == "dump":
            report = asyncio.run(archive_ops.dump(settings, archive))
        else:
            report = asyncio.run(archive_ops.restore(settings, archive, force=args.force))
    except archive_ops.TargetNotEmptyError as exc:
        log.error("%s", exc)
        return 2
    except (archive_ops.DumpError, PyMongoError, OSError) as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1
    sys.stdout.write(report.summary() + "\n")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    require_extra("server")
    from pymongo.errors import PyMongoError

    from flrepo.server.repository.migrate import CheckReport, MigrateReport, check, migrate
    from flrepo.server.settings import Settings
    from flrepo.server.storage.db import Database

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format == "json")
    log = logging.getLogger("flrepo")

    def progress(done: int, total: int, what: str) -> None:
        if not args.quiet:
            sys.stderr.write(f"[{done}/{total}] {what}\n")

    async def run() -> MigrateReport | CheckReport:
        db = Database.connect(settings)
        try:
            if args.check:
                return await check(db)  # reads only: no index is created, nothing is written
            await db.ensure_indexes()
            return await migrate(db, progress)
        finally:
            await db.close()

    try:
        report = asyncio.run(run())
    except PyMongoError as exc:
        # Whatever was migrated before the error stays migrated; running it again carries on.
        log.error("migrate failed: %s", exc)
        return 1
    sys.stdout.write(report.summary() + "\n")
    # Missing or damaged files, duplicate keys and missing unique indexes need a person (or the service):
    # a script can tell them from success.
    return OK if report.clean else INTEGRITY


def add_migrate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `flrepo migrate`."""
    migrate = sub.add_parser(
        "migrate",
        help="fill in size, sha256, CRC-32 and timestamps of items stored by aerOS 1.1.0 (reads each file once; "
        "safe to interrupt and to run again)",
    )
    migrate.add_argument("--quiet", action="store_true", help="no progress line per item on stderr")
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing: report duplicated keys, collections without their unique index, items whose "
        "file is missing and how many items a migration would touch (exit 6 when anything needs a person)",
    )
    migrate.set_defaults(func=_migrate)


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `flrepo serve`."""
    serve = sub.add_parser("serve", help="run the REST API (settings from FLREPO_* variables)")
    serve.add_argument("--host", help="bind address (default FLREPO_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="bind port (default FLREPO_PORT or 9012)")
    serve.add_argument(
        "--embedded",
        action="store_true",
        help="start a local FerretDB (SQLite) store instead of connecting to FLREPO_MONGODB_URL",
    )
    serve.add_argument("--data-dir", default=".flrepo-data", help="where --embedded keeps its data")
    serve.set_defaults(func=_serve)


def add_dump_restore(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `flrepo dump` and `flrepo restore`."""
    dump = sub.add_parser(
        "dump",
        help="write every document and file of the repository to a portable archive (tar; .tar.gz compresses)",
    )
    dump.add_argument("archive", help="the archive to write, e.g. flrepo-backup.tar.gz")
    dump.set_defaults(func=_dump_or_restore)
    restore = sub.add_parser(
        "restore",
        help="verify an archive from `flrepo dump` (every sha256), then restore it into an empty database",
    )
    restore.add_argument("archive", help="the archive to restore")
    restore.add_argument(
        "--force",
        action="store_true",
        help="merge into a non-empty database: archived items replace items with the same key, others stay",
    )
    restore.set_defaults(func=_dump_or_restore)


def add_keys(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `flrepo keys create` and `flrepo keys signing-create`."""
    keys = sub.add_parser("keys", help="API keys and signing keys").add_subparsers(dest="keys_command", required=True)
    signing = keys.add_parser(
        "signing-create",
        help="make an Ed25519 key pair for signing strategies and transformations: ID.key (private) and ID.pub",
    )
    signing.add_argument("--id", default=None, help="the key id recorded with every signature (default: random)")
    signing.add_argument("--dir", default=".", help="where to write ID.key and ID.pub (default: here)")
    signing.set_defaults(func=_keys_signing_create)
    create = keys.add_parser("create", help="make a new API key; prints it once, with its keys-file entry")
    create.add_argument("--role", required=True, choices=["reader", "writer", "admin"])
    create.add_argument("--id", default=None, help="the key's id in logs and audit (default: role-<random>)")
    create.add_argument("--file", help="also append the entry to this keys file (JSON or YAML; created if missing)")
    create.set_defaults(func=_keys_create)
