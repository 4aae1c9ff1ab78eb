"""The global options (--url, --api-key, --output, --timeout, --log-level), accepted anywhere before
or after the command, as git and kubectl take theirs: `flrepo --url U models list`, `flrepo models
--url U list` and `flrepo models list --url U` are the same command.

Each level of the parser tree (flrepo, flrepo models, flrepo models list) declares them with
`default=SUPPRESS`: a level that is not given one leaves the value of an earlier level alone, so the
one given last wins. `fill_defaults` then sets what no level gave.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flrepo.client.base import DEFAULT_URL

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULTS: dict[str, Any] = {"url": None, "api_key": None, "output": "table", "timeout": 60.0, "log_level": None}


def add_global_options(parser: argparse.ArgumentParser, *, url_aliases: tuple[str, ...] = ()) -> None:
    """The global options on one level of the parser tree; `url_aliases` adds names for --url (the FL
    commands' historical --repo)."""
    group = parser.add_argument_group("global options (before or after the command)")
    # Left unset, the SDK reads FLREPO_URL / FLREPO_API_KEY (flrepo.client.base.client_options).
    group.add_argument(
        "--url", *url_aliases, dest="url", default=argparse.SUPPRESS, help=f"default: FLREPO_URL, else {DEFAULT_URL}"
    )
    group.add_argument("--api-key", default=argparse.SUPPRESS, help="default: FLREPO_API_KEY")
    group.add_argument(
        "--output", "-O", choices=["table", "json"], default=argparse.SUPPRESS, help="table (default) or json"
    )
    group.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds per network operation (default: 60)"
    )
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="messages on stderr (default: FLREPO_LOG_LEVEL, else WARNING; DEBUG also logs every HTTP request)",
    )


def fill_defaults(args: argparse.Namespace) -> None:
    """Set each global option that no level of the command line gave; --log-level becomes
    FLREPO_LOG_LEVEL for this process, which every command (and `serve`'s settings) reads."""
    for name, default in DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.log_level:
        os.environ["FLREPO_LOG_LEVEL"] = args.log_level
