"""The file a resumable upload completes (`Upload-Metadata: target /model/base/base2`): the aerOS path of
a file PUT, resolved to its item and attached through the repository exactly as that PUT attaches it.

Each target stands for one file PUT route (TARGETS names its path template; a test checks that every
file PUT route of the API is one). Its path parameters are checked with the route's own types. When the
upload is created the target is checked (`Target.check`: the caller may write it, the item exists, a
weights' configuration id matches); when it completes, the stored file is attached (`Target.attach`: the
same checks again, then the switch-then-delete of the old file), and the route records the change in
the audit trail as that PUT would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import HTTPException
from pydantic import Field, TypeAdapter, ValidationError

from flrepo.schemas.identifiers import Identifier
from flrepo.server.repository import checkpoints, items, outputs
from flrepo.server.repository.claims import Actor
from flrepo.server.repository.kinds import MODELS, RESULTS, STRATEGIES, TRANSFORMATIONS
from flrepo.server.storage.blobs import IncomingFile, StoredFile
from flrepo.server.storage.db import Database

MAX_TARGET = 1024
Params = dict[str, Any]
# What a target does with a file; given none, only the checks that come before reading it (the dry run).
Handler = Callable[[Database, Params, Actor, IncomingFile | None, int], Awaitable[StoredFile | None]]

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
# routes/checkpoints.Round's bounds.
_ROUND: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=10_000)])


def stored_file(stored: StoredFile, filename: str | None) -> IncomingFile:
    """A finished upload's file as the store takes it: already in GridFS, nothing left to read."""
    return IncomingFile(filename, stored.content_type, _no_bytes(), stored=stored)


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _receive(file: IncomingFile) -> Callable[[], Awaitable[IncomingFile]]:
    async def receive() -> IncomingFile:
        return file

    return receive


async def _item(
    db: Database, kind: Any, key: Params, file: IncomingFile | None, limit: int, expect: Params | None = None
) -> StoredFile | None:
    if file is None:
        await items.attachable(db, kind, key, expect=expect)
        return None
    return await items.attach(db, kind, key, _receive(file), limit, expect=expect)


async def _model(db: Database, p: Params, actor: Actor, file: IncomingFile | None, limit: int) -> StoredFile | None:
    # routes/models.upload_model
    await outputs.check_model(db, p["model_name"], p["model_version"], actor)
    return await _item(db, MODELS, {"model_name": p["model_name"], "model_version": p["model_version"]}, file, limit)


async def _strategy(db: Database, p: Params, actor: Actor, file: IncomingFile | None, limit: int) -> StoredFile | None:
    # routes/strategies.upload_strategy
    return await _item(db, STRATEGIES, {"strategy_name": p["strategy_name"]}, file, limit)


async def _transformation(
    db: Database, p: Params, actor: Actor, file: IncomingFile | None, limit: int
) -> StoredFile | None:
    # routes/transformations.upload_transformation
    return await _item(db, TRANSFORMATIONS, {"id": p["transformation_id"]}, file, limit)


async def _weights(db: Database, p: Params, actor: Actor, file: IncomingFile | None, limit: int) -> StoredFile | None:
    # routes/training_results.upload_weights: the path's configuration_id must be the result's own (409).
    await outputs.check_result(db, p["model_name"], p["model_version"], p["training_id"], actor)
    key = {"model_name": p["model_name"], "model_version": p["model_version"], "training_id": p["training_id"]}
    return await _item(db, RESULTS, key, file, limit, expect={"configuration_id": p["configuration_id"]})


async def _checkpoint(
    db: Database, p: Params, actor: Actor, file: IncomingFile | None, limit: int
) -> StoredFile | None:
    # routes/checkpoints.upload_checkpoint
    if file is None:
        await checkpoints.attachable(db, p["task_id"], p["round"], actor)
        return None
    return await checkpoints.attach(db, p["task_id"], p["round"], _receive(file), limit, None, actor)


@dataclass(frozen=True)
class Route:
    """A file PUT route as a target: its path template, the types of its parameters, its handler."""

    template: str
    types: dict[str, TypeAdapter[Any]]
    handler: Handler

    def match(self, path: str) -> Params | None:
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        found = re.fullmatch(pattern, path)
        return found.groupdict() if found else None


TARGETS: tuple[Route, ...] = (
    Route("/model/{model_name}/{model_version}", {"model_name": _IDENTIFIER, "model_version": _IDENTIFIER}, _model),
    Route("/strategy/{strategy_name}", {"strategy_name": _IDENTIFIER}, _strategy),
    Route("/transformation/{transformation_id}", {"transformation_id": _IDENTIFIER}, _transformation),
    Route(
        "/training-results/{model_name}/{model_version}/{training_id}/{configuration_id}",
        {name: _IDENTIFIER for name in ("model_name", "model_version", "training_id", "configuration_id")},
        _weights,
    ),
    Route("/tasks/{task_id}/checkpoints/{round}", {"task_id": _IDENTIFIER, "round": _ROUND}, _checkpoint),
)


@dataclass(frozen=True)
class Target:
    """The file one upload completes: the route it stands for, its decoded path and checked parameters."""

    route: Route
    path: str
    params: Params

    async def check(self, db: Database, actor: Actor) -> None:
        """What the PUT checks before reading a byte: NotFound, Conflict, Forbidden as it would answer."""
        await self.route.handler(db, self.params, actor, None, 0)

    async def attach(self, db: Database, actor: Actor, file: IncomingFile, limit: int) -> StoredFile:
        stored = await self.route.handler(db, self.params, actor, file, limit)
        assert stored is not None  # a handler given a file attaches it or raises
        return stored


def target_path(target: str) -> str:
    """The decoded path; HTTPException 422 when it is no plain path."""
    if not target.startswith("/") or len(target) > MAX_TARGET or any(c in target for c in "?#"):
        raise HTTPException(422, "the upload's target must be an API path such as /model/NAME/VERSION")
    try:
        path = unquote(target, errors="strict")
    except UnicodeDecodeError:
        raise HTTPException(422, "the upload's target is not valid percent-encoded UTF-8") from None
    return path.rstrip("/") or "/"


def resolve(target: str) -> Target:
    """The target `target` names; 422 for a path that takes no file, or parameters its route refuses
    (the route's own validation errors, at `["path", name]`)."""
    path = target_path(target)
    for route in TARGETS:
        raw = route.match(path)
        if raw is None:
            continue
        params: Params = {}
        errors: list[dict[str, Any]] = []
        for name, adapter in route.types.items():
            try:
                params[name] = adapter.validate_python(raw[name])
            except ValidationError as exc:
                errors += [
                    {**error, "loc": ["path", name, *error["loc"]]}
                    for error in exc.errors(include_url=False, include_context=False)
                ]
        if errors:
            raise HTTPException(422, errors)
        return Target(route, path, params)
    raise HTTPException(422, f"{path!r} is not a file upload path (/model/NAME/VERSION, /strategy/NAME, ...)")
