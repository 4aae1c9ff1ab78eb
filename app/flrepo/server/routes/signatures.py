"""The signature state of stored code (strategies and transformations), as the service sees it: who
signed each item (key id) and whether that signature verifies with the public keys the service is
told to trust (FLREPO_TRUSTED_KEYS / FLREPO_TRUSTED_KEYS_FILE, the ones collectors and local
executions trust). Only for display (the web console): every loader still verifies for itself, and
the service never unpickles anything."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from flrepo.server.deps import DB, Page, SettingsDep, listed, problems
from flrepo.server.repository import items
from flrepo.server.repository.kinds import STRATEGIES, TRANSFORMATIONS
from flrepo.server.settings import Settings
from flrepo.signing import Keyring, SignatureError, verify_digest

router = APIRouter(tags=["service"])
log = logging.getLogger(__name__)

Kind = Literal["strategy", "transformation"]
_KINDS = {"strategy": (STRATEGIES, "strategy_name"), "transformation": (TRANSFORMATIONS, "id")}


class SignatureState(BaseModel):
    name: str = Field(description="The strategy's name or the transformation's id.")
    sha256: str | None = Field(default=None, description="The stored file's sha256 (null: no file yet).")
    signed: bool
    key_id: str | None = None
    algorithm: str | None = None
    verified: bool = Field(description="The signature verifies with a key this service trusts, for the stored file.")
    detail: str = Field(description="Why it does not verify, or which key verified it.")


def keyring(settings: Settings) -> Keyring:
    """The public keys the service checks with: its settings' (none, or unreadable ones: nothing verifies,
    and each item says why)."""
    env = {"FLREPO_TRUSTED_KEYS": settings.trusted_keys}
    if settings.trusted_keys_file:
        env["FLREPO_TRUSTED_KEYS_FILE"] = os.fspath(settings.trusted_keys_file)
    try:
        return Keyring.from_env(env)
    except (OSError, ValueError) as exc:
        log.warning("trusted keys unreadable, no signature verifies: %s", exc)
        return Keyring.verifier({})


def state(ring: Keyring, kind: str, name: str, doc: dict[str, Any]) -> SignatureState:
    meta = doc.get("meta") or {}
    signed = bool(meta.get("signature"))
    verified, detail = False, "not signed"
    if signed and doc.get("sha256") is None:
        detail = "signed, but no file is stored"
    elif signed:
        try:
            verify_digest(ring, kind, name, str(doc["sha256"]), int(doc.get("size") or 0), meta, allow_unsigned=False)
            verified, detail = True, f"verified with trusted key {meta.get('key_id')!r}"
        except SignatureError as exc:
            detail = str(exc)
    return SignatureState(
        name=name,
        sha256=doc.get("sha256"),
        signed=signed,
        key_id=str(meta["key_id"]) if signed and meta.get("key_id") is not None else None,
        algorithm=str(meta.get("algorithm") or "hmac-sha256") if signed else None,
        verified=verified,
        detail=detail,
    )


@router.get("/signatures/{kind}", response_model=list[SignatureState], responses=problems())
async def list_signatures(
    kind: Annotated[Kind, Path(description="strategy or transformation")],
    db: DB,
    page: Page,
    settings: SettingsDep,
    response: Response,
) -> list[SignatureState]:
    """Each stored strategy's or transformation's signature: its key id, and whether it verifies with the
    keys this service trusts (FLREPO_TRUSTED_KEYS) for the file stored now (`X-Total-Count` holds the total)."""
    collection, name_field = _KINDS[kind]
    found = await items.page(db, collection, query={}, limit=page.limit, offset=page.offset)
    ring = keyring(settings)
    return [state(ring, kind, str(doc.get(name_field)), doc) for doc in listed(response, found)]
