"""flrepo's SuperLink holds a SuperNode's pull for its next message while none can have come (its last
pull found nothing and the ServerApp pushed nothing since), and passes it on to Flower the moment the
ServerApp pushes (flrepo.fl.message.held_pulls); every other request goes straight through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("flwr")

from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.proto.node_pb2 import Node

from flrepo.fl.message import held_pulls, superlink
from flrepo.fl.message.held_pulls import PULL_PATH, HeldPulls


class FakeLink:
    """Flower's app as far as these requests go: a queue of messages per node, filled by pushes."""

    def __init__(self) -> None:
        self.queued: dict[int, int] = {}
        self.seen: list[tuple[str, bytes]] = []  # (path, body) of every request Flower answered

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["path"], body))
        answer = b""
        if scope["path"] == PULL_PATH:
            node = PullMessagesRequest.FromString(body).node.node_id
            if self.queued.get(node):
                self.queued[node] -= 1
                answer = PullMessagesResponse(messages_list=[MessageProto()]).SerializeToString()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})


async def call(app: Any, path: str, body: bytes = b"") -> bytes:
    answer: list[bytes] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)  # no disconnect: the client waits
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            answer.append(message.get("body", b""))

    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    return b"".join(answer)


def pull(node: int) -> bytes:
    return PullMessagesRequest(node=Node(node_id=node)).SerializeToString()


def found(answer: bytes) -> int:
    return len(PullMessagesResponse.FromString(answer).messages_list)


def test_a_pull_after_an_empty_one_waits_for_the_serverapps_push_and_then_gets_its_message():
    async def scenario() -> None:
        link, held = FakeLink(), HeldPulls(hold_s=30.0)
        fleet = superlink.FleetOnly(link, held=held)
        assert found(await call(fleet, PULL_PATH, pull(7))) == 0  # the first pull goes through: nothing yet
        waiting = asyncio.create_task(call(fleet, PULL_PATH, pull(7)))
        other = asyncio.create_task(call(fleet, PULL_PATH, pull(8)))  # another node's first pull is not held
        assert found(await asyncio.wait_for(other, 10)) == 0
        await asyncio.sleep(0.05)
        assert not waiting.done() and held.held == 1
        assert [path for path, _ in link.seen].count(PULL_PATH) == 2  # Flower has not seen the held one
        link.queued[7] = 1
        held.pushed()  # a message the ServerApp pushed is whole: the pull goes on
        assert found(await asyncio.wait_for(waiting, 10)) == 1
        assert link.seen[-1] == (PULL_PATH, pull(7))  # Flower got the very request the node sent

    asyncio.run(scenario())


def test_a_pull_is_not_held_after_a_pull_that_found_a_message_or_a_push_since_the_empty_one():
    async def scenario() -> None:
        link, held = FakeLink(), HeldPulls(hold_s=30.0)
        fleet = superlink.FleetOnly(link, held=held)
        link.queued[7] = 2  # Flower answers one message a pull
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 1
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 1
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 0
        held.pushed()  # a push after that empty pull: the next may find something
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 0
        assert held.held == 0  # and nothing since: the node's next pull is held
        assert not (await asyncio.wait({asyncio.create_task(call(fleet, PULL_PATH, pull(7)))}, timeout=0.1))[0]
        assert held.held == 1

    asyncio.run(scenario())


def test_a_held_pull_goes_on_when_its_hold_ends_or_the_superlink_stops():
    async def scenario() -> None:
        link, held = FakeLink(), HeldPulls(hold_s=0.2)
        fleet = superlink.FleetOnly(link, held=held)
        await call(fleet, PULL_PATH, pull(7))
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 0  # after its 0.2 s
        held.hold_s = 3600.0
        waiting = asyncio.create_task(call(fleet, PULL_PATH, pull(7)))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        held.close()
        assert found(await asyncio.wait_for(waiting, 10)) == 0
        assert found(await asyncio.wait_for(call(fleet, PULL_PATH, pull(7)), 10)) == 0  # none held any more
        assert held.held == 2

    asyncio.run(scenario())


def test_a_pull_that_cannot_be_read_goes_to_flower_as_sent_and_is_never_held():
    async def scenario() -> None:
        link, held = FakeLink(), HeldPulls(hold_s=3600.0)
        fleet = superlink.FleetOnly(link, held=held)

        async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
            link.seen.append((scope["path"], (await receive())["body"]))
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        fleet.app = broken
        for _ in range(3):
            await asyncio.wait_for(call(fleet, PULL_PATH, b"\xff\xff not protobuf"), 10)
        assert link.seen == [(PULL_PATH, b"\xff\xff not protobuf")] * 3 and held.held == 0

    asyncio.run(scenario())


def test_the_hold_ends_well_before_the_supernodes_request_timeout():
    """A SuperNode's Fleet client gives up on a request after Flower's default timeout (30 s in flwr
    1.42): a held pull must be answered long before. Fails loudly if Flower's default changes."""
    from flwr.supercore.protobuf.client import ProtobufClient

    timeout = (ProtobufClient.__init__.__kwdefaults__ or {}).get("timeout")
    assert isinstance(timeout, float), "Flower's Fleet client no longer has a timeout default"
    assert held_pulls.HOLD_S * 5 <= timeout
