"""The phase machine (flrepo.server.repository.task_states) on its own: the server's rules, kept out of
the wire models the SDK shares (flrepo.schemas.tasks)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import flrepo.schemas.tasks as wire
from flrepo.schemas.tasks import Phase, RoundRecord, StatusUpdate
from flrepo.server.repository.task_states import InvalidTransition, initial_status, transition

STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_new_task_is_pending_with_nothing_run():
    status = initial_status()
    assert status["phase"] == "Pending" and status["conditions"] == [] and status["current_round"] == 0
    assert status["start_time"] is None and status["completion_time"] is None


def test_starting_sets_the_start_time_and_a_training_condition():
    fields, pushes = transition(Phase.PENDING, StatusUpdate(phase=Phase.RUNNING, current_round=1), STAMP)
    assert fields["phase"] == "Running" and fields["start_time"] == STAMP and fields["current_round"] == 1
    assert pushes["conditions"]["type"] == "Training" and pushes["conditions"]["reason"] == "Running"
    assert "completion_time" not in fields


def test_a_report_while_running_appends_its_round_without_a_condition():
    update = StatusUpdate(round=RoundRecord(round=2, loss=0.5, participants=3))
    fields, pushes = transition(Phase.RUNNING, update, STAMP)
    assert fields["phase"] == "Running" and "start_time" not in fields
    # Without the fields left unset: every answer validates the record, which puts them back as None.
    assert pushes == {"history": [{"round": 2, "loss": 0.5, "metrics": {}, "participants": 3, "failures": 0}]}
    # Several rounds at once (a collector whose rounds end faster than it writes): in order, `round` last.
    more = StatusUpdate(round_records=[RoundRecord(round=3), RoundRecord(round=4)], round=RoundRecord(round=5))
    _, pushes = transition(Phase.RUNNING, more, STAMP)
    assert [record["round"] for record in pushes["history"]] == [3, 4, 5]


def test_ending_sets_the_completion_time_with_the_reason_given():
    fields, pushes = transition(Phase.RUNNING, StatusUpdate(phase=Phase.FAILED, reason="Cancelled"), STAMP)
    assert fields["completion_time"] == STAMP
    assert pushes["conditions"]["type"] == "Failed" and pushes["conditions"]["reason"] == "Cancelled"


def test_a_changed_discovery_record_is_unsigned_until_signed_again():
    fields, _ = transition(Phase.RUNNING, StatusUpdate(server_address="127.0.0.1:9092"), STAMP)
    assert fields["server_address"] == "127.0.0.1:9092" and fields["discovery_signature"] is None


@pytest.mark.parametrize(
    ("now", "wanted"),
    [
        (Phase.PENDING, Phase.SUCCEEDED),
        (Phase.RUNNING, Phase.PENDING),
        (Phase.SUCCEEDED, Phase.SUCCEEDED),
        (Phase.FAILED, Phase.RUNNING),
        (Phase.SUCCEEDED, None),
    ],
)
def test_moves_the_machine_does_not_allow_are_refused(now, wanted):
    with pytest.raises(InvalidTransition, match=f"is {now.value}"):
        transition(now, StatusUpdate(phase=wanted, message="x"), STAMP)


def test_the_wire_models_hold_no_server_rules():
    for name in ("transition", "initial_status", "InvalidTransition", "ALLOWED_FROM", "CONDITION_TYPES"):
        assert not hasattr(wire, name), name
