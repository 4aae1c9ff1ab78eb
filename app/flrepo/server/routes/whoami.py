"""Who the caller is: the API key's id and role, so a client (the web console) shows only what that
role may do. It changes nothing and reveals nothing beyond what the key already knows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from flrepo.server.auth import Principal, authenticate
from flrepo.server.deps import problems

router = APIRouter(tags=["service"])


class WhoAmI(BaseModel):
    key_id: str = Field(description='The API key\'s id ("anonymous" when none was sent).')
    role: str = Field(description="reader, writer or admin.", examples=["reader"])


@router.get("/whoami", response_model=WhoAmI, responses=problems(401))
async def whoami(principal: Annotated[Principal, Depends(authenticate)]) -> WhoAmI:
    """The calling key's id and role: reader (reads), writer (also creates, uploads, cancels tasks),
    admin (also deletes). 401 for an unknown key, or none where anonymous requests get no role."""
    return WhoAmI(key_id=principal.key_id, role=principal.role.label)
