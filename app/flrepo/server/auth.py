"""API keys with roles: reader (GET/HEAD), writer (+ create/update/upload), admin (+ delete, admin tools).

A task's run-time writes (status, heartbeats, checkpoints, its output) also need the task token of the
collector that claimed it, `X-Task-Token` (flrepo.server.repository.claims), unless the key is an admin's.

Keys are configured as a JSON or YAML list of `{id, role, sha256}` entries in the file named by
FLREPO_API_KEYS_FILE, so the service only ever holds hashes. A request sends its key as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Requests without a key get
FLREPO_ANONYMOUS_ROLE (default `none` when keys are configured).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from flrepo.server.repository.claims import TOKEN_HEADER, Actor

log = logging.getLogger(__name__)


class Role(IntEnum):
    NONE = 0
    READER = 1
    WRITER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; use none, reader, writer or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: Role
    sha256: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(key_id: str, role: Role) -> tuple[str, dict[str, str]]:
    """A fresh random key and the entry that configures it (only the hash is stored)."""
    key = "flr_" + secrets.token_urlsafe(32)
    return key, {"id": key_id, "role": role.label, "sha256": hash_key(key)}


def append_key(path: Path, entry: dict[str, str]) -> None:
    """Add an entry to a keys file (created if missing), refusing a duplicate id."""
    existing: list[dict[str, Any]] = []
    if path.exists() and path.read_text().strip():
        existing = [{"id": k.id, "role": k.role.label, "sha256": k.sha256} for k in load_keys(path)]
    if any(e["id"] == entry["id"] for e in existing):
        raise ValueError(f"{path} already has a key with id {entry['id']!r}")
    entries = [*existing, entry]
    text = json.dumps(entries, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(entries, sort_keys=False)
    path.write_text(text)
    path.chmod(0o600)


def load_keys(path: Path) -> list[ApiKey]:
    text = path.read_text()
    data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if isinstance(data, dict) and "keys" in data:
        data = data["keys"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{id, role, sha256}} entries")
    keys = []
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"id", "role", "sha256"} <= set(entry):
            raise ValueError(f"{path}: entry {n} needs id, role and sha256")
        digest = str(entry["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{path}: entry {entry['id']!r} has no valid sha256 hex digest")
        keys.append(ApiKey(id=str(entry["id"]), role=Role.parse(str(entry["role"])), sha256=digest))
    return keys


class KeyStore:
    def __init__(self, keys: list[ApiKey], anonymous: Role) -> None:
        self.keys = keys
        self.anonymous = anonymous

    @classmethod
    def from_settings(cls, keys_file: Path | None, anonymous_role: str | None) -> KeyStore:
        keys = load_keys(keys_file) if keys_file else []
        if anonymous_role:
            anonymous = Role.parse(anonymous_role)
        else:
            # Without any key configured there is nobody to authenticate: stay open, as aerOS was.
            anonymous = Role.NONE if keys else Role.ADMIN
        if not keys:
            log.warning("no API keys configured (FLREPO_API_KEYS_FILE): every request is %s", anonymous.label)
        elif anonymous != Role.NONE:
            log.warning("requests without an API key get the %s role (FLREPO_ANONYMOUS_ROLE)", anonymous.label)
        return cls(keys, anonymous)

    def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        found = None
        for entry in self.keys:
            # Compare every entry in constant time so timing reveals nothing about which matched.
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found


bearer = HTTPBearer(auto_error=False, description="An flrepo API key as a bearer token.")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An flrepo API key.")

METHOD_ROLES = {"GET": Role.READER, "HEAD": Role.READER, "POST": Role.WRITER, "PUT": Role.WRITER}


@dataclass(frozen=True)
class Principal:
    key_id: str  # "anonymous" when no key was sent
    role: Role


def _unauthorized() -> HTTPException:
    return HTTPException(401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """Who is calling (401 for an unknown key, or no key where anonymous requests get no role)."""
    store: KeyStore = request.app.state.keys
    key = credentials.credentials if credentials else header_key
    if key:
        entry = store.lookup(key)
        if entry is None:
            raise _unauthorized()
        principal = Principal(entry.id, entry.role)
    else:
        if store.anonymous == Role.NONE:
            raise _unauthorized()
        principal = Principal("anonymous", store.anonymous)
    request.state.principal = principal
    return principal


def require(principal: Principal, needed: Role) -> None:
    if principal.role < needed:
        raise HTTPException(403, f"this operation needs the {needed.label} role")


async def authorize(principal: Annotated[Principal, Depends(authenticate)], request: Request) -> Principal:
    """Who is calling, checked against the role the request's method needs (DELETE needs admin)."""
    require(principal, METHOD_ROLES.get(request.method, Role.ADMIN))
    return principal


async def require_admin(principal: Annotated[Principal, Depends(authorize)]) -> Principal:
    """For admin tools that are reads (audit): GET alone would only need a reader."""
    if principal.role < Role.ADMIN:
        raise HTTPException(403, "this operation needs the admin role")
    return principal


task_token_header = APIKeyHeader(
    name=TOKEN_HEADER,
    auto_error=False,
    scheme_name="TaskToken",
    description="The task token of the collector that claimed the task (POST /tasks/{task_id}/claim).",
)


async def task_actor(
    principal: Annotated[Principal, Depends(authenticate)],
    token: Annotated[str | None, Depends(task_token_header)],
) -> Actor:
    """Who writes to a task at run time: the key, and the task token it sends (admins need none)."""
    return Actor(principal.key_id, principal.role >= Role.ADMIN, token)


TaskActor = Annotated[Actor, Depends(task_actor)]
