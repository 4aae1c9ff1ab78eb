"""`flrepo`: the command line. One module per command group: flrepo.cli.server (serve, dump,
restore, migrate, keys), flrepo.cli.fl (collector, local-exec, seed, demo), flrepo.cli.items (models,
results, strategies, transformations, tasks)."""

from __future__ import annotations

import argparse
import sys

from flrepo.cli import fl, items, server
from flrepo.cli.exit_codes import exit_code
from flrepo.cli.extras import MissingExtra
from flrepo.cli.output import quiet_http_logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flrepo", description="The FL Repository.")
    sub = parser.add_subparsers(dest="command", required=True)
    # The order is the order of `flrepo --help`.
    server.add_serve(sub)
    server.add_dump_restore(sub)
    server.add_migrate(sub)
    fl.register(sub)
    server.add_keys(sub)
    items.register(sub)  # models, results, strategies, transformations, tasks
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_http_logs()
    try:
        return int(args.func(args))
    except MissingExtra as exc:  # one line naming what to install, not an ImportError traceback
        sys.stderr.write(f"flrepo {args.command}: {exc}\n")
        return exit_code(exc)
