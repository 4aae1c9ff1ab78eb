"""The ServerApp's Grid, answering `send_and_receive` without Flower's 3-second pulls.

Flower 1.42's `HttpGrid.send_and_receive` pushes the messages, then pulls the replies and sleeps
3 s whenever some are missing: every round of every strategy waits for the next multiple of 3 s
after its last reply. `FastGrid` does the same through Grid's public `push_messages` and
`pull_messages`, asking again after a short interval that grows while no reply comes
(flrepo.fl.message.polling), so a reply is seen within a few tens of milliseconds. Where flrepo's
SuperLink tells it of each SuperNode reply once it is whole (flrepo.fl.message.superlink, through a
datagram socket named in REPLY_WAKE_ENV), it pulls as each reply arrives and otherwise asks after
a quarter of a second, then at most once a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from flrepo.fl.message import packing
from flrepo.fl.message.polling import REPLY_WAKE_ENV, Backoff, wake_socket, woken
from flrepo.fl.message.programs import stock

log = logging.getLogger(__name__)

FIRST_PULL_S = 0.01
PULL_FACTOR = 1.25
MAX_PULL_S = 0.1
# Woken by the SuperLink on every reply, once it is whole (flrepo.fl.message.complete_pushes): the
# pulls between wakes are a safety net only (a 10-ms start pulled ~8 times per exchange for nothing).
WOKEN_FIRST_PULL_S = 0.25
WOKEN_MAX_PULL_S = 1.0


class FastGrid(Grid):
    """`grid` with a faster `send_and_receive`; everything else is `grid`'s own."""

    def __init__(self, grid: Grid, backoff: Backoff | None = None, replies: socket.socket | None = None) -> None:
        self.grid = grid
        self.replies = replies
        if replies is not None:
            self.backoff = backoff or Backoff(WOKEN_FIRST_PULL_S, PULL_FACTOR, WOKEN_MAX_PULL_S)
        else:
            self.backoff = backoff or Backoff(FIRST_PULL_S, PULL_FACTOR, MAX_PULL_S)
        self.woken = 0

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        outgoing = list(messages)
        for message in outgoing:
            packing.pack(message)
        return self.grid.push_messages(outgoing)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.grid.pull_messages(message_ids))
        for reply in replies:
            packing.unpack(reply)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`, then pull replies until each has one or `timeout` seconds have passed
        (as Flower's: no timeout waits for all)."""
        waiting = {message_id for message_id in self.push_messages(messages) if message_id}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        self.backoff.reset()
        while waiting:
            got = list(self.pull_messages(list(waiting)))
            replies.extend(got)
            waiting -= {reply.metadata.reply_to_message_id for reply in got}
            if got:
                self.backoff.reset()
            if not waiting:
                break
            pause = self.backoff.interval()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pause = min(pause, left)
            if self.replies is None:
                time.sleep(pause)
            elif woken(self.replies, pause):
                self.woken += 1
                self.backoff.reset()
        return replies


def wrap(grid: Grid) -> Grid:
    """`grid` as a FastGrid (as shipped with FLREPO_FLOWER_STOCK=1), woken on replies where the
    SuperLink offers that."""
    return grid if stock() else FastGrid(grid, replies=reply_socket())


def pause(grid: Grid, seconds: float) -> bool:
    """Wait before asking `grid` again for its nodes: until a SuperNode arrives (at most
    WOKEN_MAX_PULL_S) where the SuperLink tells of arrivals, else `seconds`. True if woken."""
    if isinstance(grid, FastGrid) and grid.replies is not None:
        return woken(grid.replies, WOKEN_MAX_PULL_S)
    time.sleep(seconds)
    return False


def reply_socket() -> socket.socket | None:
    """The socket the SuperLink wakes on each SuperNode push, bound here (None: poll only)."""
    path = os.environ.get(REPLY_WAKE_ENV)
    if not path:
        return None
    with contextlib.suppress(OSError):
        return wake_socket(Path(path))
    log.warning("cannot listen on %s: the grid polls for replies", path)
    return None
