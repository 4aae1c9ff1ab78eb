"""`flrepo completion bash|zsh|tcsh`: a shell completion script for every command and option,
generated from the parser itself by shtab (so it cannot drift from the commands), printed on stdout:

    source <(flrepo completion bash)                 # this shell
    flrepo completion bash > ~/.local/share/bash-completion/completions/flrepo
    flrepo completion zsh > "${fpath[1]}/_flrepo"    # zsh: a directory on $fpath
"""

from __future__ import annotations

import argparse
import functools
import sys

import shtab

from flrepo.cli.exit_codes import OK

SHELLS = ("bash", "zsh", "tcsh")


def _completion(root: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    sys.stdout.write(shtab.complete(root, shell=args.shell))
    return OK


def register(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Add `flrepo completion SHELL`, which completes every command of `root` (the whole tree, read when
    the command runs, so commands added after this one are in it too)."""
    parser = sub.add_parser(
        "completion",
        help="print a shell completion script (e.g. `source <(flrepo completion bash)`)",
        description="Print a completion script for SHELL on stdout; see docs/CLI.md for where to install it.",
    )
    parser.add_argument("shell", metavar="SHELL", choices=SHELLS, help=f"one of {', '.join(SHELLS)}")
    parser.set_defaults(func=functools.partial(_completion, root))
