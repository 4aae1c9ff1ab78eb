"""`flrepo` command line: `flrepo serve` runs the API; flrepo.cli.collections adds the collection commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from flrepo.client import RepositoryClient
from flrepo.server.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from flrepo.logs import configure_logging
    from flrepo.server.embedded import EmbeddedMongo
    from flrepo.server.main import create_app

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    embedded: EmbeddedMongo | None = None
    if args.embedded:
        data = Path(args.data_dir).resolve()
        embedded = EmbeddedMongo(data / "ferretdb", log_file=data / "ferretdb.log").start()
        overrides["mongodb_url"] = embedded.url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format == "json")
    log = logging.getLogger("flrepo")
    if embedded:
        log.info("embedded FerretDB (SQLite) at %s, data in %s", embedded.url, embedded.data_dir)
    log.info(
        "Swagger UI at http://%s:%d/docs", "127.0.0.1" if settings.host == "0.0.0.0" else settings.host, settings.port
    )
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,  # keep our JSON handler; our middleware writes the access log
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        )
    finally:
        if embedded:
            embedded.stop()
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    import json
    import secrets

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


def _dump_or_restore(args: argparse.Namespace) -> int:
    import asyncio

    from pymongo.errors import PyMongoError

    from flrepo.logs import configure_logging
    from flrepo.server import backup as archive_ops

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


def _fl_setup(args: argparse.Namespace) -> RepositoryClient:
    """The SDK client for the FL commands; signing keys come from FLREPO_SIGNING_KEY / FLREPO_VERIFY_KEYS."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flrepo.logs import configure_logging

    configure_logging(os.environ.get("FLREPO_LOG_LEVEL", "INFO"), json_logs=False)
    return RepositoryClient(args.repo, api_key=args.api_key)


def _fl_errors(command: str, run: Callable[[], int]) -> int:
    """An unreachable repository, an unknown task or a bad signature: one line and an exit code
    (the same codes as the collection commands), not a traceback."""
    from flrepo.cli.collections import exit_code
    from flrepo.client import RepositoryError
    from flrepo.signing import SignatureError

    try:
        return run()
    except (RepositoryError, SignatureError) as exc:
        sys.stderr.write(f"flrepo {command}: {exc}\n")
        return exit_code(exc)


def _collector(args: argparse.Namespace) -> int:
    from flrepo.fl import collector

    with _fl_setup(args) as repo:
        return _fl_errors("collector", lambda: collector.run(repo, args.task, args.address, args.allow_unsigned))


def _local_exec(args: argparse.Namespace) -> int:
    from flrepo.fl import local_exec
    from flrepo.fl.data import parse_partition, partition

    index, parts = parse_partition(args.data)
    x, y = partition(index, parts)

    def run() -> int:
        local_exec.run(repo, args.task, args.server, x, y, args.allow_unsigned, seed=index)
        return 0

    with _fl_setup(args) as repo:
        return _fl_errors("local-exec", run)


def _seed(args: argparse.Namespace) -> int:
    from flrepo.fl.catalogue import seed

    def run() -> int:
        report = seed(repo)
        for item in report["added"]:
            sys.stdout.write(f"added {item}\n")
        for item in report["kept"]:
            sys.stdout.write(f"kept  {item} (already there)\n")
        return 0

    with _fl_setup(args) as repo:
        return _fl_errors("seed", run)


def _demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flrepo.fl import demo

    return demo.main(rounds=args.rounds, clients=args.clients, strategy=args.strategy)


def _add_fl_options(parser: argparse.ArgumentParser) -> None:
    # Left unset, the SDK reads FLREPO_URL / FLREPO_API_KEY (app.client.sync.client_options).
    parser.add_argument("--repo", help="repository URL (default: FLREPO_URL, else http://127.0.0.1:9013)")
    parser.add_argument("--api-key", help="API key (default: FLREPO_API_KEY)")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="load strategies/transformations without a valid signature"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flrepo", description="The FL Repository.")
    sub = parser.add_subparsers(dest="command", required=True)
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

    collector = sub.add_parser("collector", help="run a task's training collector (Flower server)")
    collector.add_argument("--task", required=True, help="task id")
    collector.add_argument("--address", default="0.0.0.0:8080", help="Flower server address (HOST:PORT)")
    _add_fl_options(collector)
    collector.set_defaults(func=_collector)

    local = sub.add_parser("local-exec", help="run a local execution (Flower client) for a task")
    local.add_argument("--task", required=True, help="task id")
    local.add_argument("--server", required=True, help="the collector's Flower address (HOST:PORT)")
    local.add_argument("--data", required=True, help="local data: digits:K/N, part K of N of the digits set")
    _add_fl_options(local)
    local.set_defaults(func=_local_exec)

    seed = sub.add_parser("seed", help="upload the signed catalogue of strategies and transformations")
    _add_fl_options(seed)
    seed.set_defaults(func=_seed)

    demo = sub.add_parser("demo", help="federated training end to end on an embedded store (a few seconds)")
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--clients", type=int, default=3)
    demo.add_argument("--strategy", default="fedavg", help="a catalogue strategy, e.g. fedprox, fedmedian")
    demo.set_defaults(func=_demo)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="make a new API key; prints it once, with its keys-file entry")
    create.add_argument("--role", required=True, choices=["reader", "writer", "admin"])
    create.add_argument("--id", default=None, help="the key's id in logs and audit (default: role-<random>)")
    create.add_argument("--file", help="also append the entry to this keys file (JSON or YAML; created if missing)")
    create.set_defaults(func=_keys_create)

    from flrepo.cli.collections import register

    register(sub)  # models, results, strategies, transformations, tasks
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
