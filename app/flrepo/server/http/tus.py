"""The tus 1.0 protocol's HTTP side: its headers, parsed and written, and the route class that puts
`Tus-Resumable` on every answer of the upload routes (errors included)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from flrepo.schemas.strict import unknown_field_error

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space and comma
MAX_METADATA_PAIRS = 64


class TusRoute(APIRoute):
    """Every answer carries `Tus-Resumable: 1.0.0`, as the protocol asks of every response but OPTIONS'
    (sent there too: harmless, and clients that check it on OPTIONS find it)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"tus-resumable", TUS_VERSION.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await super().handle(scope, receive, tagged)


def check_version(value: str | None) -> None:
    """412 unless the request speaks tus 1.0.0."""
    if value != TUS_VERSION:
        raise HTTPException(412, f"Tus-Resumable must be {TUS_VERSION}", headers={"Tus-Version": TUS_VERSION})


def parse_number(name: str, value: str | None) -> int:
    """A non-negative decimal header value; HTTPException 400 (as tus asks) otherwise."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 19:
        raise TusBadRequest(f"{name} must be a non-negative integer")
    return int(value)


class TusBadRequest(HTTPException):
    """A protocol header tus says to answer with 400 (the service otherwise turns 400 into 422)."""

    protocol = True

    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


def parse_metadata(value: str | None) -> dict[str, bytes | None]:
    """`Upload-Metadata`: comma-separated `key base64value` pairs (a key may come without a value)."""
    found: dict[str, bytes | None] = {}
    if not value or not value.strip():
        return found
    pairs = value.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise TusBadRequest(f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    for pair in pairs:
        key, _, encoded = pair.strip().partition(" ")
        encoded = encoded.strip()
        if not _KEY.match(key) or key in found or " " in encoded:
            raise TusBadRequest(f"Upload-Metadata: malformed or repeated key in {pair.strip()[:80]!r}")
        try:
            found[key] = base64.b64decode(encoded, validate=True) if encoded else None
        except (binascii.Error, ValueError):
            raise TusBadRequest(f"Upload-Metadata: the value of {key!r} is not base64") from None
    return found


# The Upload-Metadata keys flrepo reads; others are refused like unknown fields of its JSON bodies
# (a misspelt `target` or `filename` must not be dropped without a word).
METADATA_KEYS = ("target", "filename", "filetype")


def check_metadata_keys(metadata: dict[str, bytes | None]) -> None:
    """422 naming every key flrepo does not read, with the key it probably meant."""
    unknown = [key for key in metadata if key not in METADATA_KEYS]
    if unknown:
        errors = [unknown_field_error(key, list(METADATA_KEYS)) for key in unknown]
        detail = [
            {"type": e.type, "loc": ["header", "Upload-Metadata", key], "msg": e.message(), "ctx": e.context}
            for key, e in zip(unknown, errors, strict=True)
        ]
        raise HTTPException(422, detail)


def metadata_text(metadata: dict[str, bytes | None], key: str) -> str | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, f"Upload-Metadata: {key!r} must be UTF-8 text") from None


def parse_checksum(value: str | None, algorithms: dict[str, Any]) -> tuple[str, bytes] | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`; 400 for an unknown algorithm or a bad digest."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in algorithms:
        raise TusBadRequest(f"unsupported checksum algorithm {algorithm[:40]!r}; use one of {', '.join(algorithms)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusBadRequest("Upload-Checksum: the digest is not base64") from None
    if len(digest) != algorithms[algorithm]().digest_size:
        raise TusBadRequest(f"Upload-Checksum: a {algorithm} digest has {algorithms[algorithm]().digest_size} bytes")
    return algorithm, digest


def http_date(stamp: datetime) -> str:
    if stamp.tzinfo is None:  # stored as UTC
        stamp = stamp.replace(tzinfo=UTC)
    return format_datetime(stamp.astimezone(UTC), usegmt=True)


def header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response header entry."""
    return {"description": description, "schema": schema or {"type": "string"}}


TUS_RESUMABLE = header("The protocol version: 1.0.0", {"type": "string", "enum": [TUS_VERSION]})
UPLOAD_OFFSET = header("Bytes of the upload received so far", {"type": "integer", "minimum": 0})
UPLOAD_EXPIRES = header("When the unfinished upload expires (RFC 9110 date); every part moves it on")
