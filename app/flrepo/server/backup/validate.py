"""Pass 1 of a restore, continued: every archived document must be one the API itself would accept
and can answer with, checked with the API's own schemas before anything is written.

A digest only proves the archive is what its writer wrote, not that its writer was this service: an
edited or foreign archive could hold names with `../`, `/` or NUL, wrong types, lone surrogates, NaN
or values no response can carry, after which lists answer 500 to everyone.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ValidationError

from flrepo.names import is_surrogate
from flrepo.schemas import (
    CollectorIn,
    CollectorOut,
    ModelIn,
    ModelOut,
    StrategyIn,
    StrategyOut,
    TrainingResultIn,
    TrainingResultOut,
    TransformationIn,
    TransformationOut,
)
from flrepo.schemas.tasks import CheckpointOut, TaskOut
from flrepo.server.backup.format import ArchiveError
from flrepo.server.repository.kinds import ALL_KINDS

# What a document of each collection must satisfy: the request schema (names, keys, value rules)
# and the response schema (the fields the service adds, as the API returns them).
SCHEMAS: dict[str, tuple[type[BaseModel], ...]] = {
    "models": (ModelIn, ModelOut),
    "results": (TrainingResultIn, TrainingResultOut),
    "strategies": (StrategyIn, StrategyOut),
    "transformations": (TransformationIn, TransformationOut),
    "tasks": (TaskOut,),
    "checkpoints": (CheckpointOut,),
    "collectors": (CollectorIn, CollectorOut),
}
KEYS = {kind.collection: kind.keys for kind in ALL_KINDS}
# aerOS stored file ids as strings, a hand-edited database may hold ObjectIds: both are served.
FILE_FIELDS = {kind.collection: kind.file_field for kind in ALL_KINDS if kind.file_field}
MAX_REPORTED = 10
INT64 = 2**63


def _unstorable(value: Any, path: str = "") -> str | None:
    """Why `value` cannot be served back as JSON (None when it can)."""
    if isinstance(value, str):
        return f"{path or 'a string'} holds a lone surrogate" if any(is_surrogate(ch) for ch in value) else None
    if isinstance(value, bool) or value is None or isinstance(value, datetime):
        return None
    if isinstance(value, int):
        return None if -INT64 <= value < INT64 else f"{path} is an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value}"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a key that is not a string"
            if why := _unstorable(key, f"{path}.{key!a}") or _unstorable(item, f"{path}.{key}"):
                return why
        return None
    if isinstance(value, list):
        for n, item in enumerate(value):
            if why := _unstorable(item, f"{path}[{n}]"):
                return why
        return None
    return f"{path} is a {type(value).__name__}, which the API cannot return"


def _problem(collection: str, doc: dict[str, Any]) -> str | None:
    body = {key: value for key, value in doc.items() if key != "_id"}
    file_field = FILE_FIELDS.get(collection)
    if file_field and isinstance(body.get(file_field), ObjectId):
        body[file_field] = str(body[file_field])
    if why := _unstorable(body):
        return why
    for key in KEYS[collection]:
        value = body.get(key)
        if isinstance(value, str) and unicodedata.normalize("NFC", value) != value:
            return f"{key} is not in Unicode NFC (the API could never name it)"
    for schema in SCHEMAS[collection]:
        try:
            schema.model_validate(body)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            return f"{where}: {error['msg']}"
    return None


def check_documents(archive: Path, collections: dict[str, list[dict[str, Any]]]) -> None:
    """ArchiveError naming (up to ten) documents the API would refuse; nothing is written then."""
    problems: list[str] = []
    for collection, docs in collections.items():
        for doc in docs:
            why = _problem(collection, doc)
            if why:
                key = ", ".join(f"{k}={str(doc.get(k))[:64]!a}" for k in KEYS[collection])
                problems.append(f"{collection} {key}: {why}")
                if len(problems) == MAX_REPORTED:
                    break
    if problems:
        raise ArchiveError(f"{archive}: documents the API would refuse, nothing restored: " + "; ".join(problems))
