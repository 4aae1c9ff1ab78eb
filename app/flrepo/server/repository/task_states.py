"""A task's phase machine: which status updates a task's phase allows, and what each one sets.

Phases move Pending → Running → Succeeded | Failed (or Pending → Failed). The server alone applies
it (flrepo.server.repository.tasks); the wire models it reads (Phase, StatusUpdate) are in
flrepo.schemas.tasks, shared with the SDK.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flrepo.schemas.tasks import TERMINAL, Phase, StatusUpdate

# Which phases a task may be in for each requested phase; terminal phases accept nothing.
ALLOWED_FROM: dict[Phase, tuple[Phase, ...]] = {
    Phase.PENDING: (Phase.PENDING,),
    Phase.RUNNING: (Phase.PENDING, Phase.RUNNING),
    Phase.SUCCEEDED: (Phase.RUNNING,),
    Phase.FAILED: (Phase.PENDING, Phase.RUNNING),
}

# The condition type each phase's transitions are recorded under (the seeds' task CRD).
CONDITION_TYPES: dict[Phase, str] = {
    Phase.PENDING: "Pending",
    Phase.RUNNING: "Training",
    Phase.SUCCEEDED: "Completed",
    Phase.FAILED: "Failed",
}


class InvalidTransition(ValueError):
    """A status update that the task's phase does not allow."""


def initial_status() -> dict[str, Any]:
    """The status fields of a new task: Pending, nothing run yet."""
    return {
        "phase": Phase.PENDING.value,
        "conditions": [],
        "start_time": None,
        "completion_time": None,
        "current_round": 0,
        "participants": [],
        "history_total": 0,
        "result": None,
        "best": None,
        "strategy_settings": None,
        "resumed_from_round": None,
        "runtime": None,
        "server_address": None,
        "server_ca": None,
        "heartbeat": None,
        "claimed_by": None,
        "discovery_signature": None,
        "site_reports": [],
        "active": 0,
        "succeeded": 0,
        "failed": 0,
    }


def transition(phase_now: Phase, update: StatusUpdate, stamp: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields to set and the entries to append for `update` on a task in `phase_now`.

    Phases move Pending → Running → Succeeded | Failed (or Pending → Failed); anything else, and
    any change to a finished task, raises InvalidTransition.
    """
    target = update.phase or phase_now
    if phase_now in TERMINAL or phase_now not in ALLOWED_FROM[target]:
        raise InvalidTransition(f"is {phase_now.value}; cannot move to {target.value}")
    fields: dict[str, Any] = {"phase": target.value}
    if update.current_round is not None:
        fields["current_round"] = update.current_round
    if update.participants is not None:
        fields["participants"] = [p.model_dump() for p in update.participants]
    if update.result is not None:
        fields["result"] = update.result.model_dump()
    if update.strategy_settings is not None:
        fields["strategy_settings"] = update.strategy_settings
    if update.resumed_from_round is not None:
        fields["resumed_from_round"] = update.resumed_from_round
    for name in ("runtime", "server_address", "server_ca", "active", "succeeded", "failed"):
        if getattr(update, name) is not None:
            fields[name] = getattr(update, name)
    if update.discovery_signature is not None:
        fields["discovery_signature"] = update.discovery_signature.model_dump()
    elif update.server_address is not None or update.server_ca is not None or update.runtime is not None:
        fields["discovery_signature"] = None  # a changed record is unsigned until signed again
    pushes: dict[str, Any] = {}
    records = [*(update.round_records or []), *([update.round] if update.round is not None else [])]
    if records:
        # Stored without the fields left unset (None): the task document keeps the newest records
        # (flrepo.server.repository.tasks.RECENT_ROUNDS) and the embedded store rewrites all of it, each
        # field with its type, at every report. Every answer validates a record as RoundRecord, which
        # puts the Nones back.
        pushes["history"] = [record.model_dump(exclude_none=True) for record in records]
    if target != phase_now or update.reason:
        if target == Phase.RUNNING and target != phase_now:
            fields["start_time"] = stamp
        if target in TERMINAL and target != phase_now:
            fields["completion_time"] = stamp
        pushes["conditions"] = {
            "type": CONDITION_TYPES[target],
            "status": "True",
            "reason": update.reason or target.value,
            "message": update.message,
            "last_transition_time": stamp,
        }
    return fields, pushes
