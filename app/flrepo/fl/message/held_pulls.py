"""A SuperNode's ask for its next message, held by the SuperLink until there can be one.

Flower 1.42's SuperNodes poll the Fleet API (`/v1/fleet/pull-messages`) for their next message;
flrepo's SuperNode polls at intervals that grow from 20 ms to 1 s while nothing comes
(flrepo.fl.message.supernode). Whatever the interval, a message waits on average half of it: in a
3-site round, the sites asked 30-60 ms after the ServerApp's message was there, twice a round, and
the round waits for the latest site; at 30 sites, whose rounds last seconds, half a second.

A SuperNode's messages come from one place only, the ServerApp's pushes on the SuperLink's Runtime
API, and the SuperLink answers a node's pull with at most one message. So when a node's last pull
found nothing and the ServerApp has pushed nothing since that pull began, this pull can find
nothing either: `HeldPulls` holds it, before Flower sees it, until a message the ServerApp pushed
is whole on the SuperLink, its objects too (flrepo.fl.message.complete_pushes), or HOLD_S passes,
then passes it on. Flower answers it as it would have; the node learns of the
message within a request's time of its push. Nothing else changes: a pull that might find a message
goes straight through, the request is Flower's (signed, checked by Flower after the hold: its
timestamp allows minutes), and a held pull ends at once when the SuperLink stops.

flrepo's SuperNode sees a held pull in its duration and asks again at once instead of sleeping
(flrepo.fl.message.supernode.NodeTime), so a node is nearly always waiting in a held pull.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from flrepo.fl.message.asgi_capture import Scope, answered, body, replaying

PULL_PATH = "/v1/fleet/pull-messages"
# Below the SuperNode's HTTP timeout (Flower's client: 30 s) and its heartbeat interval; a held pull
# is a request the SuperLink keeps open, so not much longer than the SuperNode's own longest sleep.
HOLD_S = 2.0


class HeldPulls:
    """The SuperLink's record of pushes and of each node's last empty pull (one event loop)."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.generation = 0  # ServerApp pushes so far
        self.held = 0  # pulls held so far (for tests and logs)
        self._changed = asyncio.Event()
        self._closing = False
        # node id -> the push count when its last pull, which found nothing, began
        self._empty_since: dict[int, int] = {}

    def pushed(self) -> None:
        """The ServerApp pushed a message, whole (flrepo.fl.message.complete_pushes): every held pull
        goes on to Flower."""
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """The SuperLink is stopping: no pull is held any more."""
        self._closing = True
        self._changed.set()

    async def pull(self, app: Any, scope: Scope, receive: Any, send: Any) -> None:
        """Serve a Fleet API pull-messages request through `app`, held first if it can find nothing."""
        data = await body(receive)
        node = _node_of(data)
        if node is not None and self._empty_since.get(node) == self.generation and not self._closing:
            self.held += 1
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.hold_s)
        began = self.generation
        status, answer = await answered(app, scope, replaying(data, receive), send)
        if node is None:
            return
        if status == 200 and _no_message(answer):
            self._empty_since[node] = began
        else:
            self._empty_since.pop(node, None)


def _node_of(body: bytes) -> int | None:
    """The node id a PullMessagesRequest names; None when it cannot be read (passed on, never held)."""
    from flwr.proto.fleet_pb2 import PullMessagesRequest

    try:
        return int(PullMessagesRequest.FromString(body).node.node_id)
    except Exception:  # not ours to judge: Flower answers it
        return None


def _no_message(body: bytes) -> bool:
    from flwr.proto.fleet_pb2 import PullMessagesResponse

    try:
        return not PullMessagesResponse.FromString(body).messages_list
    except Exception:
        return False
