"""flrepo's SuperLink tells the side waiting for a message that it is there once it is whole: its
`push-messages` and every object the SuperLink asked for after it (flrepo.fl.message.complete_pushes),
on both sides (the ServerApp's messages release the SuperNodes' held pulls; the SuperNodes' replies
wake the ServerApp's grid)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("flwr")

from flwr.proto.fleet_pb2 import PushMessagesResponse
from flwr.proto.message_pb2 import PushObjectRequest, PushObjectResponse
from flwr.proto.runtime_pb2 import PushAppMessagesResponse

from flrepo.fl.message import superlink
from flrepo.fl.message.complete_pushes import CompletePushes
from tests.fl.test_held_pulls import call

MESSAGES, OBJECT = "/v1/fleet/push-messages", "/v1/fleet/push-object"


class FakeLink:
    """Flower's answers: push-messages asks for `wanted` under a new session; push-object stores."""

    def __init__(self, wanted: list[str], status: int = 200) -> None:
        self.wanted, self.status = wanted, status
        self.bodies: list[bytes] = []
        self.sessions = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.bodies.append((await receive())["body"])
        if scope["path"].endswith("push-messages"):
            self.sessions += 1
            answer = PushMessagesResponse(objects_to_push=self.wanted, session_id=f"s{self.sessions}")
        else:
            answer = PushObjectResponse(stored=True)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": answer.SerializeToString()})


def pushed(object_id: str, session: str) -> bytes:
    return PushObjectRequest(object_id=object_id, session_id=session, object_content=b"x" * 10).SerializeToString()


def test_a_push_is_told_once_every_object_it_was_asked_for_is_stored():
    told: list[int] = []
    link = FakeLink(["a", "b"])
    pushes = CompletePushes(MESSAGES, OBJECT, PushMessagesResponse, lambda: told.append(1))

    async def scenario() -> None:
        await call(lambda *a: pushes.serve(link, *a), MESSAGES)  # session s1 wants a, b
        await call(lambda *a: pushes.serve(link, *a), MESSAGES)  # session s2 wants a, b
        assert told == []
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("a", "s1"))
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("b", "s2"))  # another session's
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("zz", "s1"))  # not asked for
        assert told == []
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("b", "s1"))
        assert told == [1]  # s1 whole
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("a", "s2"))
        assert told == [1, 1]  # s2 whole
        await call(lambda *a: pushes.serve(link, *a), OBJECT, pushed("a", "s2"))  # again: nothing open
        assert told == [1, 1]
        assert link.bodies[-1] == pushed("a", "s2")  # Flower got each body as sent

    asyncio.run(scenario())


def test_a_push_that_needs_no_object_or_cannot_be_read_or_fails_is_told_at_once():
    told: list[str] = []

    async def scenario() -> None:
        whole = CompletePushes(MESSAGES, OBJECT, PushMessagesResponse, lambda: told.append("whole"))
        await call(lambda *a: whole.serve(FakeLink([]), *a), MESSAGES)
        assert told == ["whole"]  # the SuperLink had every object
        refused = CompletePushes(MESSAGES, OBJECT, PushMessagesResponse, lambda: told.append("refused"))
        await call(lambda *a: refused.serve(FakeLink(["a"], status=409), *a), MESSAGES)
        assert told[-1] == "refused"
        failed = CompletePushes(MESSAGES, OBJECT, PushMessagesResponse, lambda: told.append("failed"))
        await call(lambda *a: failed.serve(FakeLink(["a"]), *a), MESSAGES)
        await call(lambda *a: failed.serve(FakeLink(["a"], status=500), *a), OBJECT, pushed("b", "s1"))
        assert told[-1] == "failed"
        garbled = CompletePushes(MESSAGES, OBJECT, PushMessagesResponse, lambda: told.append("garbled"))
        await call(lambda *a: garbled.serve(FakeLink(["a"]), *a), OBJECT, b"\xff\xff not protobuf")
        assert told[-1] == "garbled"

    asyncio.run(scenario())


def test_the_superlink_releases_held_pulls_when_the_serverapps_message_is_whole():
    """The Runtime API side: a ServerApp push (PushAppMessagesResponse) ends the SuperNodes' holds only
    once its objects are stored."""
    from flrepo.fl.message.held_pulls import HeldPulls

    async def scenario() -> None:
        held = HeldPulls()

        class Runtime(FakeLink):
            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                await receive()
                answer: Any = PushObjectResponse(stored=True)
                if scope["path"].endswith("push-messages"):
                    answer = PushAppMessagesResponse(objects_to_push=["m", "r"], session_id="s1")
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": answer.SerializeToString()})

        pushes = CompletePushes(*superlink.RUNTIME_PUSH, PushAppMessagesResponse, held.pushed)
        runtime = superlink.Watched(Runtime([]), pushes)
        await call(runtime, "/v1/runtime/push-messages")
        await call(runtime, "/v1/runtime/push-object", pushed("m", "s1"))
        assert held.generation == 0
        await call(runtime, "/v1/runtime/push-object", pushed("r", "s1"))
        assert held.generation == 1

    asyncio.run(scenario())
