"""A site's side of a task's privacy, as a mod of flrepo's ClientApp: Flower's `secaggplus_mod`
for a SecAgg+ round, Flower's `fixedclipping_mod` or `adaptiveclipping_mod` for client-side DP,
and both for a task with both, each run only when the round asks for it and the site allows it.

With both, the clipping mod runs inside secaggplus_mod, as in Flower's own example of DP with
SecAgg+ (`mods=[secaggplus_mod, fixedclipping_mod]`): the site clips its plain update, then masks
the clipped one. Flower 1.42's clipping mods take a message with exactly one ConfigRecord, so they
are shown the round's message without SecAgg+'s. Under DP every site's weight is 1 (the collector's
noise is calibrated to a plain mean of the sites' updates; flrepo.fl.message.privacy).

FLREPO_PRIVACY_MODS (comma-separated, default `clipping,secaggplus`) names the mods a site runs;
a round that needs one the site leaves out is answered with an error that says so, and the
collector fails the round (and the task) with that reason instead of receiving an update the
task's privacy does not cover.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

log = logging.getLogger(__name__)
MODS_ENV = "FLREPO_PRIVACY_MODS"
DEFAULT_MODS = "clipping,secaggplus"
CLIPPING_KEY = "flrepo-clipping"  # set by the collector for client-side DP (flrepo.fl.message.privacy)
SECAGG_CONFIGS = "secaggplus_configs"  # Flower's RECORD_KEY_CONFIGS (checked in test_privacy_internals)
SECAGG_STAGE = "stage"  # Flower's Key.STAGE in those configs (idem)
WEIGHT_KEY = "num-examples"
# Tests only: "<SecAgg+ stage>:<file>" makes this site, on receiving that stage, write the file and
# wait (at most HOLD_LIMIT_S) until the site is stopped: a test stops it at a known point of the
# protocol (tests/fl/test_privacy_secagg.py: a site that drops out before sending its masked input).
HOLD_ENV = "FLREPO_TEST_SECAGG_HOLD"
HOLD_LIMIT_S = 600.0


def allowed_mods() -> set[str]:
    return {name.strip() for name in os.environ.get(MODS_ENV, DEFAULT_MODS).split(",") if name.strip()}


def _refuse(message: Message, mod: str, need: str) -> Message:
    reason = f"this site does not run Flower's {mod} ({MODS_ENV}={os.environ.get(MODS_ENV, DEFAULT_MODS)!r}): {need}"
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=message)


def _as_fitres(call_next: ClientAppCallable, uniform: bool) -> ClientAppCallable:
    """flrepo's train reply in the legacy FitRes records Flower's secaggplus_mod reads; with weight 1
    when `uniform` (DP)."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    def call(message: Message, context: Context) -> Message:
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        arrays = reply.content.array_records["arrays"].to_numpy_ndarrays()
        metrics = {k: v for k, v in reply.content.metric_records["metrics"].items() if isinstance(v, int | float)}
        if uniform:
            metrics[WEIGHT_KEY] = 1
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(metrics[WEIGHT_KEY]), dict(metrics))
        content: RecordDict = compat.fitres_to_recorddict(fitres, keep_input=True)
        return Message(content, reply_to=message)

    return call


def _without_secagg(mod: Mod | None, call_next: ClientAppCallable) -> ClientAppCallable:
    """`mod` (a clipping mod) in front of `call_next`, shown the message without SecAgg+'s configs."""
    if mod is None:
        return call_next

    def call(message: Message, context: Context) -> Message:
        plain = copy.copy(message)  # the same metadata (a reply to it is a reply to `message`)
        plain.content = RecordDict({key: rec for key, rec in message.content.items() if key != SECAGG_CONFIGS})
        return mod(plain, context, call_next)

    return call


def _clipping_mod(clipping: str) -> Mod:
    from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

    return adaptiveclipping_mod if clipping == "adaptive" else fixedclipping_mod


def _hold_for_test(stage: str, group: str) -> None:
    """FLREPO_TEST_SECAGG_HOLD (tests only): at the named stage, say so in the named file and wait
    until this process's parent (the site's SuperExec) is gone, then leave without a reply."""
    hold = os.environ.get(HOLD_ENV, "")
    named, _, marker = hold.partition(":")
    if not hold or named != stage:
        return
    parent, deadline = os.getppid(), time.monotonic() + HOLD_LIMIT_S
    log.warning("%s: holding at SecAgg+ stage %s of round %s until this site stops", HOLD_ENV, stage, group)
    part = Path(f"{marker}.part")
    part.write_text(f"{stage} {group}\n")
    part.replace(marker)  # whole when it appears
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            os._exit(1)  # the site was stopped: it never sends this stage's reply
        time.sleep(0.05)
    log.warning("%s: nobody stopped this site within %g s; going on", HOLD_ENV, HOLD_LIMIT_S)


def _secure(message: Message, context: Context, call_next: ClientAppCallable, clipping: str) -> Message:
    """A SecAgg+ stage, with the task's client-side clipping inside secaggplus_mod when it has DP."""
    if "secaggplus" not in allowed_mods():
        return _refuse(message, "secaggplus_mod", "the task aggregates with SecAgg+")
    if clipping and "clipping" not in allowed_mods():
        return _refuse(message, f"{clipping}clipping_mod", "the task clips updates at the site (client-side DP)")
    from flwr.client.mod import secaggplus_mod

    _hold_for_test(str(message.content.config_records[SECAGG_CONFIGS][SECAGG_STAGE]), message.metadata.group_id)
    inner = _without_secagg(_clipping_mod(clipping) if clipping else None, call_next)
    return secaggplus_mod(message, context, _as_fitres(inner, uniform=bool(clipping)))


def _clipping(config: ConfigRecord | None) -> str:
    """The client-side clipping the round asks for ("fixed", "adaptive"; "" for none)."""
    return str(config.get(CLIPPING_KEY, "")) if config is not None else ""


def site_privacy(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The privacy mods a training round asks for, in front of flrepo's ClientApp."""
    if message.metadata.message_type != MessageType.TRAIN:
        return call_next(message, context)
    records = message.content.config_records
    clipping = _clipping(records.get("config"))
    if SECAGG_CONFIGS in records:
        return _secure(message, context, call_next, clipping)
    if not clipping:
        return call_next(message, context)
    if "clipping" not in allowed_mods():
        return _refuse(message, f"{clipping}clipping_mod", "the task clips updates at the site (client-side DP)")
    return _clipping_mod(clipping)(message, context, call_next)
