"""Polling intervals that start short and grow: Flower's Message API is pull-based, so whoever waits
for a message asks again and again. A fixed long sleep (Flower's 3 s) puts that sleep into every
round; a fixed short one costs requests while nothing happens. Asking quickly just after something
happened and more slowly the longer nothing does bounds the added delay to a fraction of the wait,
at a handful of requests per wait."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Backoff:
    """The next sleep: `first` after a `reset`, then `factor` times longer each time, at most `cap`."""

    first: float
    factor: float
    cap: float
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1:
            raise ValueError(f"need 0 < first <= cap and factor >= 1: {self}")
        self._next = self.first

    def reset(self) -> None:
        """Something happened: ask again soon."""
        self._next = self.first

    def interval(self) -> float:
        """How long to sleep now (and make the following one longer)."""
        now = self._next
        self._next = min(self.cap, now * self.factor)
        return now

    def sleep(self) -> None:
        time.sleep(self.interval())


# Flower 1.42 waits 1 s (then 2, 4, ... up to 10 s) before asking again for a message's object that
# is not there yet. Every hop of a message pulls objects (the SuperNode from the SuperLink, the
# ClientApp from the SuperNode, the ServerApp's grid the replies from the SuperLink), and an object
# is often a few milliseconds short of ready when it is first asked for: a round paid 1 s per hop.
OBJECT_PULL_FIRST_S = 0.01
OBJECT_PULL_CAP_S = 1.0


def quick_object_pulls() -> None:
    """Make this process's object pulls ask again after 10 ms, doubling up to 1 s (Flower: 1 s, to
    10 s). The intervals are keyword defaults of Flower's two pull functions, which every caller
    uses; tests/fl/test_flower_internals.py fails loudly if Flower changes them."""
    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = function.__kwdefaults__
        if defaults is None or not {"initial_backoff", "backoff_cap"} <= defaults.keys():
            raise RuntimeError(f"Flower's {function.__qualname__} no longer takes initial_backoff/backoff_cap")
        defaults["initial_backoff"] = OBJECT_PULL_FIRST_S
        defaults["backoff_cap"] = OBJECT_PULL_CAP_S


# The datagram socket the ServerApp's grid listens on for SuperNodes' replies and arrivals: set by
# flrepo's SuperLink (flrepo.fl.message.superlink) for its executor, whose ServerApp inherits it.
REPLY_WAKE_ENV = "FLREPO_REPLY_WAKE_SOCKET"


def wake_socket(path: Path) -> socket.socket:
    """A datagram socket to be woken on (a SuperNode's SuperExec, the ServerApp's grid): whoever has
    stored what it waits for writes to `path`."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    path.chmod(0o600)
    sock.setblocking(False)
    return sock


def wake(path: Path) -> None:
    """Tell whoever listens on `path` (if anyone) that something is waiting."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.sendto(b"1", str(path))


def woken(sock: socket.socket, seconds: float) -> bool:
    """Wait up to `seconds` for a datagram on `sock`; True if one came (every queued one is read)."""
    ready, _, _ = select.select([sock], [], [], seconds)
    if not ready:
        return False
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(64)
    return True
