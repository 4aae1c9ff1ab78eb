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
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

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
from flrepo.schemas.identifiers import Identifier
from flrepo.schemas.tasks import CheckpointOut, RoundRecord, TaskOut
from flrepo.server.backup.format import ArchiveError, FileEntry, Plan
from flrepo.server.repository.kinds import ALL_KINDS
from flrepo.server.storage.blobs import parse_file_id


class StoredRound(RoundRecord):
    """A round record as `task_rounds` keeps it (flrepo.server.repository.rounds)."""

    task_id: Identifier
    seq: int = Field(ge=1)


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
    "task_rounds": (StoredRound,),
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


# GridFS chunks are documents: a chunk must fit in one (16 MiB) with room for its other fields.
MAX_CHUNK_BYTES = 15 * 1024 * 1024
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def _identifier_problem(value: Any, name: str) -> str | None:
    try:
        _IDENTIFIER.validate_python(value)
    except ValidationError as exc:
        return f"{name}: {exc.errors(include_url=False)[0]['msg']}"
    return None


def _pins_problem(doc: dict[str, Any]) -> str | None:
    """A task restored must pin what it loads: a missing or null pin would be skipped by the pin check."""
    pins = doc.get("pins")
    if not isinstance(pins, dict):
        return "pins: missing or null (a restored task must pin its strategy and transformations)"
    if not isinstance(pins.get("strategy"), dict) or not pins["strategy"].get("sha256"):
        return "pins.strategy.sha256 is null"
    if not isinstance(pins.get("model"), dict):
        return "pins.model is null"
    for pin in pins.get("transformations") or []:
        if not isinstance(pin, dict) or not pin.get("sha256"):
            return f"pins.transformations: {pin.get('id') if isinstance(pin, dict) else pin!r} has a null sha256"
    return None


def _file_problem(entry: FileEntry) -> str | None:
    chunk = entry.file.get("chunkSize")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK_BYTES:
        return f"chunkSize {chunk!r} is not within 1..{MAX_CHUNK_BYTES}"
    if entry.file.get("length") != entry.length:
        return f"length {entry.file.get('length')!r} is not the file's {entry.length} bytes"
    recorded = entry.file.get("sha256")
    if recorded is not None and recorded != entry.sha256:
        return "its recorded sha256 is not the sha256 of its bytes"
    return None


def _item_file_problem(collection: str, doc: dict[str, Any], files: dict[Any, FileEntry]) -> str | None:
    """An item's recorded sha256 and size must be those of the file it points at (ETags and pins rely on them)."""
    field = FILE_FIELDS.get(collection)
    if not field or doc.get(field) is None:
        return None
    entry = files.get(parse_file_id(doc.get(field)))
    if entry is None:
        return None  # a dangling file id: served as "no file" (pass 1 of verify checks archived files only)
    if doc.get("sha256") is not None and doc["sha256"] != entry.sha256:
        return f"sha256 {str(doc['sha256'])[:16]}… is not its file's {entry.sha256[:16]}…"
    if doc.get("size") is not None and doc["size"] != entry.length:
        return f"size {doc['size']!r} is not its file's {entry.length} bytes"
    return None


def _trust_problem(collection: str, doc: dict[str, Any], files: dict[Any, FileEntry]) -> str | None:
    if collection in ("tasks", "checkpoints", "task_rounds") and (
        why := _identifier_problem(doc.get("task_id"), "task_id")
    ):
        return why
    if collection == "tasks" and (why := _pins_problem(doc)):
        return why
    return _item_file_problem(collection, doc, files)


def check_consistency(archive: Path, plan: Plan) -> None:
    """ArchiveError naming (up to ten) tamperings a digest cannot reveal: task ids outside the API's
    rules, null pins, GridFS chunk sizes out of bounds or lengths that disagree, items whose recorded
    sha256 or size is not their file's. Nothing is written then."""
    problems = [f"file {entry.member}: {why}" for entry in plan.files if (why := _file_problem(entry))]
    files = {parse_file_id(entry.file_id): entry for entry in plan.files}
    for collection, docs in plan.collections.items():
        for doc in docs:
            if why := _trust_problem(collection, doc, files):
                key = ", ".join(f"{k}={str(doc.get(k))[:64]!a}" for k in KEYS[collection])
                problems.append(f"{collection} {key}: {why}")
    if problems:
        raise ArchiveError(
            f"{archive}: the archive was tampered with, nothing restored: " + "; ".join(problems[:MAX_REPORTED])
        )
