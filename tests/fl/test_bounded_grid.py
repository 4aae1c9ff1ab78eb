"""The ServerApp's BoundedGrid asks the SuperLink for the node list once for a burst of questions
(Flower's sampling and the participant wait ask several times in a row), asks again once that
answer is older than its time to live, and always after waiting for a SuperNode to arrive."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from flrepo.fl.core.reporting import ParticipantWait
from flrepo.fl.message import server


class CountingGrid:
    def __init__(self, nodes: list[list[int]]) -> None:
        self.answers = nodes
        self.asked = 0

    def get_node_ids(self) -> list[int]:
        self.asked += 1
        return list(self.answers[min(self.asked, len(self.answers)) - 1])


def test_a_burst_of_questions_is_one_request_and_an_old_answer_is_asked_again(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(server.time, "monotonic", lambda: clock[0])
    grid = CountingGrid([[1, 2, 3], [1, 2]])
    bounded = server.BoundedGrid(grid, ParticipantWait(2, 60.0, clock[0]))  # type: ignore[arg-type]
    assert [list(bounded.get_node_ids()) for _ in range(4)] == [[1, 2, 3]] * 4
    assert grid.asked == 1
    clock[0] += server.BoundedGrid.NODES_TTL_S + 0.01
    assert list(bounded.get_node_ids()) == [1, 2] and grid.asked == 2  # a node left meanwhile


def test_waiting_for_a_site_asks_again_after_each_pause(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(server.time, "monotonic", lambda: clock[0])
    paused: list[float] = []
    monkeypatch.setattr(server.fast_grid, "pause", lambda grid, seconds: paused.append(seconds) or False)
    grid = CountingGrid([[1], [1], [1, 2]])
    bounded = server.BoundedGrid(grid, ParticipantWait(2, 60.0, clock[0]), poll=0.5)  # type: ignore[arg-type]
    assert list(bounded.get_node_ids()) == [1, 2]  # the clock stood still: only the pauses refreshed it
    assert grid.asked == 3 and len(paused) == 2
