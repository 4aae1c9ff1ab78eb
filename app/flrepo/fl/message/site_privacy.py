"""A site's side of a task's privacy, as a mod of flrepo's ClientApp: Flower's `secaggplus_mod`
for a SecAgg+ round, Flower's `fixedclipping_mod` or `adaptiveclipping_mod` for client-side DP,
each run only when the round asks for it and the site allows it.

FLREPO_PRIVACY_MODS (comma-separated, default `clipping,secaggplus`) names the mods a site runs;
a round that needs one the site leaves out is answered with an error that says so, and the
collector fails the round (and the task) with that reason instead of receiving an update the
task's privacy does not cover.
"""

from __future__ import annotations

import os

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

MODS_ENV = "FLREPO_PRIVACY_MODS"
DEFAULT_MODS = "clipping,secaggplus"
CLIPPING_KEY = "flrepo-clipping"  # set by the collector for client-side DP (flrepo.fl.message.privacy)
SECAGG_CONFIGS = "secaggplus_configs"  # Flower's RECORD_KEY_CONFIGS (checked in test_privacy_internals)
WEIGHT_KEY = "num-examples"


def allowed_mods() -> set[str]:
    return {name.strip() for name in os.environ.get(MODS_ENV, DEFAULT_MODS).split(",") if name.strip()}


def _refuse(message: Message, mod: str, need: str) -> Message:
    reason = f"this site does not run Flower's {mod} ({MODS_ENV}={os.environ.get(MODS_ENV, DEFAULT_MODS)!r}): {need}"
    return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=message)


def _as_fitres(call_next: ClientAppCallable) -> ClientAppCallable:
    """flrepo's train reply in the legacy FitRes records Flower's secaggplus_mod reads."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    def call(message: Message, context: Context) -> Message:
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        arrays = reply.content.array_records["arrays"].to_numpy_ndarrays()
        metrics = {k: v for k, v in reply.content.metric_records["metrics"].items() if isinstance(v, int | float)}
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(metrics[WEIGHT_KEY]), dict(metrics))
        content: RecordDict = compat.fitres_to_recorddict(fitres, keep_input=True)
        return Message(content, reply_to=message)

    return call


def site_privacy(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The privacy mods a training round asks for, in front of flrepo's ClientApp."""
    if message.metadata.message_type != MessageType.TRAIN:
        return call_next(message, context)
    if SECAGG_CONFIGS in message.content.config_records:
        if "secaggplus" not in allowed_mods():
            return _refuse(message, "secaggplus_mod", "the task aggregates with SecAgg+")
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(message, context, _as_fitres(call_next))
    config = message.content.config_records.get("config")
    clipping = str(config.get(CLIPPING_KEY, "")) if config is not None else ""
    if not clipping:
        return call_next(message, context)
    if "clipping" not in allowed_mods():
        return _refuse(message, f"{clipping}clipping_mod", "the task clips updates at the site (client-side DP)")
    from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

    mod = adaptiveclipping_mod if clipping == "adaptive" else fixedclipping_mod
    return mod(message, context, call_next)
