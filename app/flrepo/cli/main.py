"""`flrepo`: the command line. One module per command group: flrepo.cli.server (serve, dump,
restore, migrate, keys), flrepo.cli.fl (collector, local-exec, seed, demo), flrepo.cli.items (models,
results, strategies, transformations, tasks), flrepo.cli.completion (shell completion)."""

from __future__ import annotations

import argparse
import sys

from flrepo.cli import completion, fl, items, server
from flrepo.cli.exit_codes import INTERRUPTED, exit_code
from flrepo.cli.extras import MissingExtra
from flrepo.cli.options import add_global_options, fill_defaults
from flrepo.cli.output import quiet_http_logs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flrepo", description="The FL Repository.")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order is the order of `flrepo --help`.
    server.add_serve(sub)
    server.add_dump_restore(sub)
    server.add_migrate(sub)
    fl.register(sub)
    server.add_keys(sub)
    items.register(sub)  # models, results, strategies, transformations, tasks
    completion.register(sub, parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fill_defaults(args)
    quiet_http_logs()
    try:
        return int(args.func(args))
    except MissingExtra as exc:  # one line naming what to install, not an ImportError traceback
        sys.stderr.write(f"flrepo {args.command}: {exc}\n")
        return exit_code(exc)
    except KeyboardInterrupt:
        # Ctrl-C: one line, the shell's code for SIGINT; a download's .part stays for the next run.
        sys.stderr.write(f"flrepo {args.command}: interrupted\n")
        return INTERRUPTED
