"""When a pushed message is whole on the SuperLink: its `push-messages` and every object it was asked for.

Flower 1.42 pushes a message in steps: `push-messages` registers it and its object tree and answers
with the objects the SuperLink still needs (`objects_to_push`, under a `session_id`); one
`push-object` per object follows. Until the last one is stored, whoever pulls the message gets it
but not all its objects, and retries them at growing intervals. flrepo's SuperLink wakes the side
waiting for a message — the SuperNodes' held pulls for the ServerApp's messages
(flrepo.fl.message.held_pulls), the ServerApp's grid for the SuperNodes' replies
(flrepo.fl.message.fast_grid) — when the message is whole, not at each step: one pull and one
object pull each, instead of a pull per step and retries.

`CompletePushes` watches both kinds of request on one side of the SuperLink and calls `whole()` once
per complete push. What it cannot read (a body that is not the protobuf it expects, an error answer)
calls `whole()` at once, as the step-by-step wake did: the waiting side then pulls and retries as
Flower's own client would.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flrepo.fl.message.asgi_capture import Scope, answered, body, replaying

# Sessions whose objects are not all pushed yet; a pusher that died leaves one behind: bounded.
MAX_OPEN_SESSIONS = 10_000


class CompletePushes:
    """Calls `whole` when the objects a `messages_path` answer asked for have all come through
    `object_path` (or at once when it asked for none)."""

    def __init__(self, messages_path: str, object_path: str, response_type: Any, whole: Callable[[], None]) -> None:
        self.messages_path, self.object_path = messages_path, object_path
        self.response_type = response_type  # Fleet PushMessagesResponse or Runtime PushAppMessagesResponse
        self.whole = whole
        self._open: OrderedDict[str, set[str]] = OrderedDict()  # session id -> objects still to come

    def watches(self, path: str) -> bool:
        return path in (self.messages_path, self.object_path)

    async def serve(self, app: Any, scope: Scope, receive: Any, send: Any) -> None:
        """Serve a push through `app`; note what it asked for, or what it completed."""
        if scope.get("path") == self.messages_path:
            status, answer = await answered(app, scope, receive, send)
            self._registered(status, answer)
            return
        data = await body(receive)
        status, _ = await answered(app, scope, replaying(data, receive), send)
        self._stored(status, data)

    def _registered(self, status: int, answer: bytes) -> None:
        try:
            response = self.response_type.FromString(answer) if status == 200 else None
        except Exception:
            response = None
        missing = set(response.objects_to_push) if response is not None else set()
        if response is None or not missing:  # whole already, or unreadable: wake now
            self.whole()
            return
        self._open[response.session_id] = missing
        while len(self._open) > MAX_OPEN_SESSIONS:
            self._open.popitem(last=False)

    def _stored(self, status: int, data: bytes) -> None:
        from flwr.proto.message_pb2 import PushObjectRequest

        try:
            request = PushObjectRequest.FromString(data)
        except Exception:
            self.whole()
            return
        if status != 200:
            self.whole()  # the pusher may give up: let the waiting side see what there is
            return
        missing = self._open.get(request.session_id)
        if missing is None:
            return
        missing.discard(request.object_id)
        if not missing:
            del self._open[request.session_id]
            self.whole()
