"""The exit codes of every `flrepo` command (also in docs/CLI.md), so scripts can branch on them."""

from __future__ import annotations

from flrepo.cli.extras import MissingExtra
from flrepo.client import (
    Conflict,
    Forbidden,
    IntegrityError,
    Invalid,
    NotFound,
    SignatureError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from flrepo.signing import NoSigningKey


class UsageError(Exception):
    """A bad argument the parser could not catch (e.g. a file that does not exist)."""


class WouldOverwrite(Exception):
    """A download would replace a different local file, and --force was not given."""


# argparse already exits 2 (USAGE) on a usage error.
OK, ERROR, USAGE, NOT_FOUND, CONFLICT, UNAVAILABLE, INTEGRITY, DENIED, TOO_LARGE = range(9)
INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it: 128 + 2
EXIT_CODES: list[tuple[type[Exception], int]] = [
    (NotFound, NOT_FOUND),
    (Conflict, CONFLICT),
    (WouldOverwrite, CONFLICT),
    (Unavailable, UNAVAILABLE),
    (IntegrityError, INTEGRITY),
    (NoSigningKey, USAGE),  # before its base class: a setup problem, not a bad file
    (SignatureError, INTEGRITY),
    (Unauthorized, DENIED),
    (Forbidden, DENIED),
    (TooLarge, TOO_LARGE),
    (Invalid, USAGE),
    (UsageError, USAGE),
    (MissingExtra, USAGE),  # a setup problem, like NoSigningKey
]


def exit_code(exc: Exception) -> int:
    """The first EXIT_CODES entry `exc` is an instance of; ERROR for anything else."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return ERROR
