"""Resumable (tus) uploads as `GET /uploads` lists them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class OpenUpload(BaseModel):
    """An unfinished, unexpired resumable upload."""

    id: str = Field(description="Its id: PATCH, HEAD and DELETE /uploads/{id}.")
    key_id: str | None = Field(default=None, description="The API key that created it.")
    target: str = Field(description="The file path it completes (e.g. /model/NAME/VERSION).")
    filename: str | None = None
    length: int = Field(description="The file's announced size in bytes (reserved against the key's quota).")
    offset: int = Field(description="Bytes received so far.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="When it expires unless more bytes arrive.")
