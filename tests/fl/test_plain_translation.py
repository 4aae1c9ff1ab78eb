"""Flower's protobuf and error translation middlewares as plain ASGI (flrepo.fl.message.plain_translation):
the SuperNode and SuperLink apps keep their middleware, in order, with exactly those two swapped, and a
SuperNode app answers every kind of request — a protobuf success, a wrong media type, a broken
payload, a non-protobuf route, an unknown path — byte for byte as with Flower's own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("flwr")

import httpx
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode.main import create_app
from flwr.supernode.nodestate import NodeStateFactory

from flrepo.fl.message import plain_translation
from flrepo.fl.message.plain_translation import PlainErrorTranslation, PlainProtobufTranslation, plain

PROTOBUF = "application/protobuf"
REQUESTS = [
    ("POST", "/v1/runtime/acquire-task", AcquireTaskRequest().SerializeToString(), PROTOBUF),
    ("POST", "/v1/runtime/acquire-task", b"{}", "application/json"),
    ("POST", "/v1/runtime/acquire-task", b"\xff\xff\xff", PROTOBUF),
    ("GET", "/health", b"", None),
    ("POST", "/v1/no-such-route", b"", PROTOBUF),
]


def supernode_app(plain_ones: bool) -> Any:
    app = create_app(state_factory=NodeStateFactory(ObjectStoreFactory()), superexec_auth_secret=None)
    if plain_ones:
        app.user_middleware[:] = plain(list(app.user_middleware))
    return app


def answers(app: Any) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    async def ask() -> list[tuple[int, list[tuple[str, str]], bytes]]:
        found = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
            for method, path, body, media in REQUESTS:
                headers = {"content-type": media} if media else {}
                response = await client.request(method, path, content=body, headers=headers)
                found.append((response.status_code, sorted(response.headers.items()), response.content))
        return found

    return asyncio.run(ask())


def test_a_supernode_app_answers_every_kind_of_request_as_with_flowers_own_middleware():
    stock, ours = answers(supernode_app(False)), answers(supernode_app(True))
    assert ours == stock
    statuses = [status for status, _, _ in ours]
    assert statuses == [200, 415, 400, 200, 404]  # each path of the two middlewares was taken
    assert ("content-type", PROTOBUF) in ours[0][1] and b'"code":1002' in ours[1][2]


def test_exactly_flowers_two_translation_middlewares_are_swapped_in_place():
    from flwr.superlink import main as superlink

    node = list(supernode_app(False).user_middleware)
    swapped = plain(node)
    assert [m.cls for m in swapped] == [PlainErrorTranslation, PlainProtobufTranslation]  # Flower's order
    link = list(superlink._get_middleware())
    changed = [(a.cls, b.cls) for a, b in zip(link, plain(link), strict=True) if a is not b]
    assert [b for _, b in changed] == [PlainErrorTranslation, PlainProtobufTranslation], changed


def test_the_supernode_launcher_installs_them(monkeypatch):
    from flwr.supernode import main

    monkeypatch.setattr(main, "create_app", main.create_app)  # restored after the test
    plain_translation.install_supernode()
    app = main.create_app(state_factory=None, superexec_auth_secret=None)
    assert [m.cls for m in app.user_middleware] == [PlainErrorTranslation, PlainProtobufTranslation]
