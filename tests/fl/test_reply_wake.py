"""flrepo's SuperLink tells the ServerApp's grid of each SuperNode reply (once whole: its objects
too, flrepo.fl.message.complete_pushes) and arrival through a datagram socket
(flrepo.fl.message.superlink.FleetOnly), and the grid pulls when told instead of polling every
0.1 s (flrepo.fl.message.fast_grid)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flrepo.fl.message import fast_grid, polling, superlink
from flrepo.fl.message.polling import Backoff
from tests.fl.test_fast_runtime import SlowReplies, messages

NEVER_S = 60.0  # a poll interval the test would notice: only a wake ends the grid's wait sooner


class Inner:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_the_fleet_server_wakes_the_grid_after_a_supernodes_push_or_arrival_and_not_otherwise(tmp_path):
    listening = polling.wake_socket(tmp_path / "replies.sock")
    inner = Inner()
    fleet = superlink.FleetOnly(inner, tmp_path / "replies.sock")
    sent: list[dict] = []

    async def send(event: dict) -> None:
        sent.append(event)

    async def request(path: str) -> None:
        await fleet({"type": "http", "path": path}, None, send)

    for path in ("/v1/fleet/pull-messages", "/v1/fleet/send-node-heartbeat", "/v1/control/start-run"):
        asyncio.run(request(path))
    assert not polling.woken(listening, 0)  # polls, heartbeats and refused paths wake nobody
    assert inner.paths == ["/v1/fleet/pull-messages", "/v1/fleet/send-node-heartbeat"]  # control: 404 here
    for path in superlink.WAKE_PATHS:
        asyncio.run(request(path))
        assert polling.woken(listening, NEVER_S), path
    asyncio.run(request("/v1/fleet/push-messages"))  # an answer it cannot read: the grid pulls at once
    assert polling.woken(listening, NEVER_S)
    superlink.FleetOnly(inner, None)  # without a listener (Flower as shipped) it wakes nothing


def test_the_grid_pulls_when_woken_instead_of_waiting_out_its_interval(tmp_path):
    path = tmp_path / "replies.sock"
    inner = SlowReplies({1: 2})  # the reply is there at the second pull
    grid = fast_grid.FastGrid(inner, Backoff(NEVER_S, 1.0, NEVER_S), polling.wake_socket(path))
    first_pull = threading.Event()
    pull = inner.pull_messages

    def pull_and_tell(ids):
        try:
            return pull(ids)
        finally:
            first_pull.set()

    inner.pull_messages = pull_and_tell  # type: ignore[method-assign]
    # The SuperLink stores the reply after the grid's first pull, and says so.
    teller = threading.Thread(target=lambda: first_pull.wait(NEVER_S) and polling.wake(path))
    teller.start()
    replies = list(grid.send_and_receive(messages([1])))
    teller.join()
    assert [r.metadata.reply_to_message_id for r in replies] == ["m1"]
    assert (inner.pulls, grid.woken) == (2, 1)  # pulled again because it was woken, not after NEVER_S


def test_the_grid_listens_where_the_superlink_says_and_polls_without_it(tmp_path, monkeypatch):
    monkeypatch.delenv(polling.REPLY_WAKE_ENV, raising=False)
    polled = fast_grid.wrap(SlowReplies({1: 1}))
    assert isinstance(polled, fast_grid.FastGrid) and polled.replies is None
    assert polled.backoff.cap == fast_grid.MAX_PULL_S
    monkeypatch.setenv(polling.REPLY_WAKE_ENV, str(tmp_path / "replies.sock"))
    woken = fast_grid.wrap(SlowReplies({1: 1}))
    assert isinstance(woken, fast_grid.FastGrid) and woken.replies is not None
    assert woken.backoff.cap == fast_grid.WOKEN_MAX_PULL_S and woken.backoff.first == fast_grid.WOKEN_FIRST_PULL_S
    assert Path(tmp_path / "replies.sock").exists()
    assert fast_grid.pause(polled, 0.001) is False
    polling.wake(tmp_path / "replies.sock")
    assert fast_grid.pause(woken, NEVER_S) is True  # a SuperNode arrived: the wait for nodes ends at once
