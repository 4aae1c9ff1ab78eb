"""The shape of every JSON call, written once for both clients.

Each function here builds a `Call`: method, path, query, body and how to read the answer into a
typed value. `RepositoryClient` and `AsyncRepositoryClient` only differ in how they send it, so a
new endpoint is one function here plus one line in each client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import httpx
from pydantic import BaseModel, ValidationError

from flrepo.client.errors import Invalid, RepositoryError, describe, id_suffix
from flrepo.schemas import ModelOut, StrategyOut, TrainingResultOut, TransformationOut
from flrepo.schemas.privacy import PrivacySettings
from flrepo.schemas.tasks import (
    CheckpointOut,
    ClaimOut,
    CompressionSpec,
    ModelRef,
    RoundRecord,
    StrategyRef,
    TaskIn,
    TaskOut,
    TrainingConfig,
    TransformationRef,
)
from flrepo.schemas.tus_uploads import OpenUpload

T = TypeVar("T")
# Where a collector sends the task token its claim gave it (flrepo.server.repository.claims).
TASK_TOKEN_HEADER = "X-Task-Token"
R = TypeVar("R", covariant=True)
M = TypeVar("M", bound=BaseModel)


class Page(list[T]):
    """A list of items plus `total`, the number of matching items on the server (X-Total-Count)."""

    def __init__(self, items: list[T], total: int | None) -> None:
        super().__init__(items)
        self.total = total


@dataclass(frozen=True)
class Call(Generic[R]):
    method: str
    path: str
    parse: Callable[[httpx.Response], R]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    # Safe to send twice: reads and whole-value replacements. Creates, deletes and task status
    # reports (which append to the history) are sent once; see the clients' retry loop.
    idempotent: bool = False


def read(call: Call[R], response: httpx.Response) -> R:
    """The call's typed result; an answer that is not what the API documents (a proxy's HTML page,
    a different service on that port) becomes a RepositoryError rather than a parsing traceback."""
    try:
        return call.parse(response)
    except ValueError as exc:  # json.JSONDecodeError and pydantic.ValidationError are ValueErrors
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        request_id = response.headers.get("x-request-id")
        raise RepositoryError(
            f"{call.method} {call.path}: unexpected answer ({first_line}); is {response.url.host} an FL repository?"
            + id_suffix(request_id),
            status=response.status_code,
            request_id=request_id,
        ) from exc


def seg(value: str) -> str:
    """One path segment, percent-encoded (identifiers may hold spaces, '?', '#', '%')."""
    return quote(value, safe="")


def _one(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate(response.json())


def _page(model: type[M]) -> Callable[[httpx.Response], Page[M]]:
    def parse(response: httpx.Response) -> Page[M]:
        total = response.headers.get("x-total-count")
        items = [model.model_validate(item) for item in response.json()]
        return Page(items, int(total) if total and total.isdigit() else None)

    return parse


@dataclass(frozen=True)
class Stored:
    """A stored file's size and sha256, as the server reports them (uploads return this)."""

    size: int
    sha256: str


def etag_sha256(response: httpx.Response) -> str | None:
    """The sha256 in a response's ETag (the service's ETags are the quoted sha256), or None."""
    etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
    return etag or None


def _stored(response: httpx.Response) -> Stored:
    sha256, length = etag_sha256(response), response.headers.get("content-length", "")
    if sha256 is None or not length.isdigit():
        raise ValueError("no ETag or Content-Length")
    return Stored(int(length), sha256)


def _nothing(response: httpx.Response) -> None:
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json())


def _paging(limit: int | None, offset: int, **more: Any) -> dict[str, Any]:
    params = {key: value for key, value in more.items() if value is not None}
    if limit is not None:
        params["limit"] = limit
    if offset:
        params["offset"] = offset
    return params


def _get(path: str, parse: Callable[[httpx.Response], T], **params: Any) -> Call[T]:
    return Call("GET", path, parse, params=params, idempotent=True)


# --- service ------------------------------------------------------------------------------------


def health() -> Call[dict[str, Any]]:
    """Liveness: `{"status": "ok"}` while the process serves."""
    return _get("/health", _json)


def ready() -> Call[dict[str, Any]]:
    """Readiness: raises Unavailable while the database is unreachable."""
    return _get("/ready", _json)


def stat_file(path: str) -> Call[Stored]:
    """HEAD a file path (`model_file(...)`, `strategy_file(...)`, ...): the stored file's size and
    sha256 without its bytes."""
    # A query in the path (`weights_download`'s `encoding=raw`) goes in `params`, which httpx would
    # otherwise put in its place.
    path, _, query = path.partition("?")
    return Call("HEAD", path, _stored, params=dict(parse_qsl(query)), idempotent=True)


# --- models -------------------------------------------------------------------------------------


def list_models(trained: bool | None = None, limit: int | None = None, offset: int = 0) -> Call[Page[ModelOut]]:
    """Models; `trained=True`/`False` keeps those with/without training results."""
    params = _paging(limit, offset, trained=None if trained is None else str(trained).lower())
    return _get("/model", _page(ModelOut), **params)


def available_models(limit: int | None = None, offset: int = 0) -> Call[Page[ModelOut]]:
    """Models that have a file, newest first."""
    return _get("/models/with-files", _page(ModelOut), **_paging(limit, offset))


def get_model(model_name: str, model_version: str) -> Call[ModelOut]:
    """One model's metadata."""
    return _get("/model/meta", _one(ModelOut), model_name=model_name, model_version=model_version)


def create_model(model_name: str, model_version: str, library: str, **meta: Any) -> Call[ModelOut]:
    """Register a model; `library` tells local executions which trainer to use, `meta` adds keys."""
    body = {"model_name": model_name, "model_version": model_version, "meta": {"library": library, **meta}}
    return Call("POST", "/model", _one(ModelOut), json=body)


def update_model_meta(model_name: str, model_version: str, meta: dict[str, Any]) -> Call[None]:
    """Replace a model's `meta` (it must keep `library`)."""
    path = f"/model/meta/{seg(model_name)}/{seg(model_version)}"
    return Call("PUT", path, _nothing, json={"meta": meta}, idempotent=True)


def delete_model(model_name: str, model_version: str) -> Call[None]:
    """Delete a model and its file."""
    return Call("DELETE", f"/model/{seg(model_name)}/{seg(model_version)}", _nothing)


# --- training results ---------------------------------------------------------------------------


def list_training_results(limit: int | None = None, offset: int = 0) -> Call[Page[TrainingResultOut]]:
    """All training results."""
    return _get("/training-results", _page(TrainingResultOut), **_paging(limit, offset))


def list_model_training_results(
    model_name: str, model_version: str, limit: int | None = None, offset: int = 0
) -> Call[Page[TrainingResultOut]]:
    """The training results of one model."""
    path = f"/training-results/{seg(model_name)}/{seg(model_version)}"
    return _get(path, _page(TrainingResultOut), **_paging(limit, offset))


def get_training_result(model_name: str, model_version: str, training_id: str) -> Call[TrainingResultOut]:
    """One training result's metadata."""
    path = f"/training-results/{seg(model_name)}/{seg(model_version)}/{seg(training_id)}"
    return _get(path, _one(TrainingResultOut))


def create_training_result(
    model_name: str,
    model_version: str,
    training_id: str,
    results: dict[str, str | bool | int | float],
    configuration_id: str = "1",
) -> Call[TrainingResultOut]:
    """Record a training result (its weights are uploaded separately)."""
    body = {
        "model_name": model_name,
        "model_version": model_version,
        "training_id": training_id,
        "configuration_id": configuration_id,
        "results": results,
    }
    return Call("POST", "/training-results", _one(TrainingResultOut), json=body)


def delete_training_result(model_name: str, model_version: str, training_id: str) -> Call[None]:
    """Delete a training result and its weights."""
    path = f"/training-results/{seg(model_name)}/{seg(model_version)}/{seg(training_id)}"
    return Call("DELETE", path, _nothing)


# --- strategies ---------------------------------------------------------------------------------


def list_strategies(limit: int | None = None, offset: int = 0) -> Call[Page[StrategyOut]]:
    """All aggregation strategies."""
    return _get("/strategy", _page(StrategyOut), **_paging(limit, offset))


def get_strategy(strategy_name: str) -> Call[StrategyOut]:
    """One strategy's metadata."""
    return _get(f"/strategy/meta/{seg(strategy_name)}", _one(StrategyOut))


def create_strategy(
    strategy_name: str, description: str | None = None, meta: dict[str, Any] | None = None
) -> Call[StrategyOut]:
    """Register a strategy (upload its file with `upload_strategy`, which signs it)."""
    body = {"strategy_name": strategy_name, "strategy_description": description, "meta": meta or {}}
    return Call("POST", "/strategy", _one(StrategyOut), json=body)


def update_strategy_meta(strategy_name: str, meta: dict[str, Any], description: str | None = None) -> Call[None]:
    """Replace a strategy's `meta` (and its description when given)."""
    body: dict[str, Any] = {"meta": meta}
    if description is not None:
        body["strategy_description"] = description
    return Call("PUT", f"/strategy/meta/{seg(strategy_name)}", _nothing, json=body, idempotent=True)


def delete_strategy(strategy_name: str) -> Call[None]:
    """Delete a strategy and its file."""
    return Call("DELETE", f"/strategy/{seg(strategy_name)}", _nothing)


# --- transformations ----------------------------------------------------------------------------


def list_transformations(limit: int | None = None, offset: int = 0) -> Call[Page[TransformationOut]]:
    """All data transformations."""
    return _get("/transformation", _page(TransformationOut), **_paging(limit, offset))


def get_transformation(transformation_id: str) -> Call[TransformationOut]:
    """One transformation's metadata."""
    return _get(f"/transformation/meta/{seg(transformation_id)}", _one(TransformationOut))


def transformation_body(
    parameter_types: dict[str, str] | None = None,
    default_values: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    needs: dict[str, Any] | None = None,
    description: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The aerOS transformation metadata, with empty defaults for what is left out."""
    return {
        "description": description,
        "parameter_types": parameter_types or {},
        "default_values": default_values or {},
        "outputs": outputs or [],
        "needs": needs or {},
        "meta": meta or {},
    }


def create_transformation(transformation_id: str, **fields: Any) -> Call[TransformationOut]:
    """Register a transformation; `fields` are those of `transformation_body`."""
    body = {"id": transformation_id, **transformation_body(**fields)}
    return Call("POST", "/transformation", _one(TransformationOut), json=body)


def update_transformation_meta(transformation_id: str, **fields: Any) -> Call[None]:
    """Replace a transformation's whole metadata; `fields` are those of `transformation_body`."""
    path = f"/transformation/meta/{seg(transformation_id)}"
    return Call("PUT", path, _nothing, json=transformation_body(**fields), idempotent=True)


def delete_transformation(transformation_id: str) -> Call[None]:
    """Delete a transformation and its file."""
    return Call("DELETE", f"/transformation/{seg(transformation_id)}", _nothing)


# --- tasks --------------------------------------------------------------------------------------


def list_tasks(
    phase: str | None = None, limit: int | None = None, offset: int = 0, history: int | None = None
) -> Call[Page[TaskOut]]:
    """FL tasks, optionally only those in one phase (Pending, Running, Succeeded, Failed); each with its
    `history` most recent round records (none unless asked)."""
    return _get("/tasks", _page(TaskOut), **_paging(limit, offset, phase=phase, history=history))


def get_task(task_id: str, history: int | None = None, wait_end: float | None = None) -> Call[TaskOut]:
    """One task with its live status and its most recent round records (100 unless `history` says);
    with `wait_end`, answered when the task ends or after that many seconds (at most 25)."""
    params: dict[str, Any] = {} if history is None else {"history": history}
    if wait_end:
        params["wait_end"] = wait_end
    return _get(f"/tasks/{seg(task_id)}", _one(TaskOut), **params)


def get_task_history(task_id: str, limit: int | None = None, offset: int = 0) -> Call[Page[RoundRecord]]:
    """A task's kept round records, oldest first, a page at a time."""
    return _get(f"/tasks/{seg(task_id)}/history", _page(RoundRecord), **_paging(limit, offset))


def create_task(
    task: TaskIn | Mapping[str, Any] | None = None,
    /,
    *,
    task_id: str | None = None,
    model: ModelRef | Mapping[str, Any] | None = None,
    strategy: StrategyRef | Mapping[str, Any] | None = None,
    strategy_conf: Mapping[str, Any] | None = None,
    transformations: Sequence[TransformationRef | Mapping[str, Any]] | None = None,
    rounds: int | None = None,
    min_participants: int | None = None,
    participants_ratio: float | None = None,
    round_timeout: float | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    configuration_id: str | None = None,
    output_model_version: str | None = None,
    publish: Literal["last", "best"] | None = None,
    checkpoints_kept: int | None = None,
    heartbeat_timeout: float | None = None,
    participants_timeout: float | None = None,
    participant_keys: Sequence[str] | None = None,
    collector_keys: Sequence[str] | None = None,
    discovery_key: str | None = None,
    compression: CompressionSpec | Mapping[str, Any] | None = None,
    privacy: PrivacySettings | Mapping[str, Any] | None = None,
) -> Call[TaskOut]:
    """Create a task (phase Pending); every referenced item must exist with its file.

    The plan is given as keyword arguments (None: the service's default), or as a whole (a TaskIn or
    a dict) that keyword arguments override. It is checked before sending: an unknown field or a bad
    value raises `Invalid` naming each field (with the field probably meant for a near miss), as the
    server's 422 would."""
    passed = dict(locals())  # first statement: the arguments only
    fields = {name: value for name, value in passed.items() if name != "task" and value is not None}
    given = task.model_dump(exclude_unset=True) if isinstance(task, TaskIn) else dict(task or {})
    return Call("POST", "/tasks", _one(TaskOut), json=task_body({**given, **fields}))


def task_body(plan: Mapping[str, Any]) -> dict[str, Any]:
    """`plan` checked as the server checks it (TaskIn), as JSON; `Invalid` with the server's kind of
    `detail` (a list of `{loc, msg, type}`) when it would be refused."""
    try:
        checked = TaskIn.model_validate(plan)
    except ValidationError as exc:
        detail = [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        raise Invalid(f"POST /tasks: refused before sending: {describe(detail)}", detail=detail) from None
    return checked.model_dump(mode="json", exclude_unset=True)


def update_task_status(task_id: str, history: int | None = None, **fields: Any) -> Call[TaskOut]:
    """Report a task's status (phase, round record, participants, result...); sent once. The answer shows
    the `history` most recent round records (100 unless it says)."""
    params: dict[str, Any] = {} if history is None else {"history": history}
    return Call("PUT", f"/tasks/{seg(task_id)}/status", _one(TaskOut), params=params, json=fields)


def claim_task(task_id: str, collector: str | None = None, token: str | None = None) -> Call[ClaimOut]:
    """Claim a task for this collector: its task token (send it with `use_task_token`). 409 while another
    collector's claim is live; with the `token` of an earlier claim (a restart) it succeeds at once."""
    body = {key: value for key, value in (("collector", collector), ("token", token)) if value is not None}
    return Call("POST", f"/tasks/{seg(task_id)}/claim", _one(ClaimOut), json=body)


def report_site(
    task_id: str, site: str, state: str, reason: str | None = None, message: str | None = None
) -> Call[TaskOut]:
    """A local execution's own record in a task (state joining, failed or done; why when it failed)."""
    body = {"site": site, "state": state, "reason": reason, "message": message}
    return Call("PUT", f"/tasks/{seg(task_id)}/sites", _one(TaskOut), json=body, idempotent=True)


def cancel_task(task_id: str, message: str | None = None) -> Call[TaskOut]:
    """End a Pending or Running task (Failed, reason Cancelled); its collector and local executions stop."""
    body = {"message": message} if message else None
    return Call("POST", f"/tasks/{seg(task_id)}/cancel", _one(TaskOut), json=body)


def delete_task(task_id: str) -> Call[None]:
    """Delete a task that is not running."""
    return Call("DELETE", f"/tasks/{seg(task_id)}", _nothing)


def list_checkpoints(task_id: str, limit: int | None = None, offset: int = 0) -> Call[Page[CheckpointOut]]:
    """A task's checkpoints, oldest round first."""
    return _get(f"/tasks/{seg(task_id)}/checkpoints", _page(CheckpointOut), **_paging(limit, offset))


def create_checkpoint(
    task_id: str, round: int, loss: float | None = None, metrics: dict[str, Any] | None = None
) -> Call[CheckpointOut]:
    """Register round `round`'s aggregated weights (then upload them to checkpoint_file)."""
    body = {"round": round, "loss": loss, "metrics": metrics or {}}
    return Call("POST", f"/tasks/{seg(task_id)}/checkpoints", _one(CheckpointOut), json=body)


# --- uploads ------------------------------------------------------------------------------------


def list_uploads(limit: int | None = None, offset: int = 0) -> Call[Page[OpenUpload]]:
    """Open resumable uploads: this key's own (an admin key's: every key's), with size, offset, target, expiry."""
    return _get("/uploads", _page(OpenUpload), **_paging(limit, offset))


# --- audit --------------------------------------------------------------------------------------


def list_audit(
    key_id: str | None = None, since: str | None = None, limit: int | None = None, offset: int = 0
) -> Call[list[dict[str, Any]]]:
    """The audit log of changes (admin keys only)."""
    return _get("/audit", lambda r: list(r.json()), **_paging(limit, offset, key_id=key_id, since=since))


# --- file paths ---------------------------------------------------------------------------------
# Uploads and downloads stream, so the clients handle them apart from the JSON calls above; these
# are their paths, shared too.


def model_file(model_name: str, model_version: str) -> str:
    return f"/model/{seg(model_name)}/{seg(model_version)}"


def weights_upload(model_name: str, model_version: str, training_id: str, configuration_id: str) -> str:
    return f"/training-results/{seg(model_name)}/{seg(model_version)}/{seg(training_id)}/{seg(configuration_id)}"


def weights_download(model_name: str, model_version: str, training_id: str) -> str:
    # Without `encoding=raw` the repository answers base64 text, as aerOS 1.1.0 did for its GUI.
    return f"/training-results/weights/{seg(model_name)}/{seg(model_version)}/{seg(training_id)}?encoding=raw"


def strategy_file(strategy_name: str) -> str:
    return f"/strategy/{seg(strategy_name)}"


def transformation_file(transformation_id: str) -> str:
    return f"/transformation/{seg(transformation_id)}"


def checkpoint_file(task_id: str, round: int) -> str:
    return f"/tasks/{seg(task_id)}/checkpoints/{int(round)}"


def checkpoint_upload(
    task_id: str, round: int, register: bool, by_tus: bool, loss: float | None, metrics: Mapping[str, Any] | None
) -> tuple[Call[CheckpointOut] | None, str]:
    """Where a checkpoint's file goes, and the registration to send before it (None: none). With `register`
    the upload registers the checkpoint (in its query), unless it goes through tus, whose target takes no
    query: then it is registered first."""
    if register and by_tus:
        return create_checkpoint(task_id, round, loss, dict(metrics or {})), checkpoint_file(task_id, round)
    if register:
        return None, registering_checkpoint_file(task_id, round, loss, metrics)
    return None, checkpoint_file(task_id, round)


def registering_checkpoint_file(task_id: str, round: int, loss: float | None, metrics: Mapping[str, Any] | None) -> str:
    """checkpoint_file with the checkpoint's registration in the query (`register=true`, `loss`, `metrics`
    as JSON): one PUT registers it and uploads its file."""
    query: dict[str, str] = {"register": "true"}
    if loss is not None:
        query["loss"] = repr(float(loss))
    if metrics:
        query["metrics"] = json.dumps(dict(metrics), separators=(",", ":"))
    return f"{checkpoint_file(task_id, round)}?{urlencode(query)}"


def models_archive(filename: str) -> str:
    return f"/models/download/shell/{seg(filename)}"
