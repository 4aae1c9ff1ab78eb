"""`flrepo` command line: `flrepo serve` runs the API."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from app.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.devdb import EmbeddedMongo
    from app.main import create_app

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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
            proxy_headers=True,
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        )
    finally:
        if embedded:
            embedded.stop()
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
