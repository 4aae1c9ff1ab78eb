"""Reading an uploaded file from the request body as a stream of chunks.

Starlette's `UploadFile` spools every upload to a temporary file before the handler runs; we
parse `multipart/form-data` ourselves with python-multipart's push parser so that bytes go from
the socket to GridFS chunk by chunk, with nothing but the current chunk in memory.
A raw `application/octet-stream` body is accepted too (curl --data-binary, the SDK).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Response
from python_multipart.multipart import MultipartParser, parse_options_header

from flrepo.names import DOT_NAMES, MAX_FILENAME, is_unsafe
from flrepo.server.deps import problems
from flrepo.server.http.conditions import etag
from flrepo.server.storage.blobs import IncomingFile, StoredFile

FILE_FIELD = "file"

# Multipart parts and headers around the file add a little to Content-Length; anything beyond
# this margin over the size limit can be refused before a byte is stored.
MULTIPART_OVERHEAD = 64 * 1024

# Marks an operation whose body is a file streamed to GridFS (not held to the JSON body limit).
STREAMED_UPLOAD = "x-flrepo-streamed-upload"
UPLOAD_OPENAPI: dict[str, Any] = {
    STREAMED_UPLOAD: True,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                    "required": [FILE_FIELD],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def upload_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI answers of a file upload: 204 with the ETag, or a problem."""
    return {
        204: {
            "description": "Stored; `ETag` is the stored file's sha256",
            "headers": {
                "ETag": {"description": 'The stored file\'s sha256, quoted: `"<sha256>"`', "schema": {"type": "string"}}
            },
        },
        **problems(404, 412, 413, *codes),
    }


def uploaded(stored: StoredFile) -> Response:
    """204 with the stored file's ETag (its sha256): the client can verify without another request."""
    return Response(status_code=204, headers={"ETag": etag(stored.sha256)})


def clean_filename(name: str | None) -> str | None:
    """Keep the last path component in NFC, without control, format (Cf) or surrogate characters;
    None if nothing usable is left."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", re.split(r"[\\/]", name)[-1])
    name = "".join(ch for ch in name if not is_unsafe(ch)).strip()
    if name in DOT_NAMES or not name.strip("."):
        return None
    return name[:MAX_FILENAME]


def streams_upload(route: Any) -> bool:
    """True for a matched route that takes a streamed file upload."""
    extra = getattr(route, "openapi_extra", None)
    return isinstance(extra, dict) and extra.get(STREAMED_UPLOAD) is True


@dataclass
class _PartState:
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)
    in_file: bool = False
    file_found: bool = False
    file_done: bool = False
    filename: str | None = None
    content_type: str = "application/octet-stream"
    pending: list[bytes] = field(default_factory=list)


def _multipart_parser(boundary: bytes, state: _PartState) -> MultipartParser:
    def on_part_begin() -> None:
        state.headers = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[bytes(state.header_field).decode("latin-1").lower()] = bytes(state.header_value)
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        _, params = parse_options_header(state.headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        # Only the first part called `file` is the upload; other form fields are ignored.
        state.in_file = name == FILE_FIELD and not state.file_found
        if state.in_file:
            state.file_found = True
            raw = params.get(b"filename")
            state.filename = clean_filename(raw.decode("utf-8", "replace")) if raw else None
            ctype = state.headers.get("content-type", b"").decode("latin-1").strip()
            if ctype:
                state.content_type = ctype[:255]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.in_file:
            state.pending.append(bytes(data[start:end]))

    def on_part_end() -> None:
        if state.in_file:
            state.in_file = False
            state.file_done = True

    return MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"the file is larger than the {max_bytes}-byte limit")


async def incoming_file(request: Request, max_bytes: int) -> IncomingFile:
    """Start reading the upload; returns once the file's name and type are known."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise _too_large(max_bytes)

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        # Raw body: the whole body is the file.
        name = clean_filename(request.headers.get("x-filename"))
        content_type = ctype.decode("latin-1") if ctype else "application/octet-stream"
        return IncomingFile(name, content_type or "application/octet-stream", _raw_chunks(request))

    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(422, "multipart body without a boundary")
    state = _PartState()
    parser = _multipart_parser(boundary, state)
    stream = request.stream().__aiter__()
    # Read until the file part's headers are parsed, keeping any file data seen so far.
    try:
        while not state.file_found:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            parser.write(chunk)
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart raises its own errors on malformed bodies
        raise HTTPException(422, f"malformed multipart body: {exc}") from exc
    if not state.file_found:
        raise HTTPException(422, f"multipart field '{FILE_FIELD}' is required")
    return IncomingFile(state.filename, state.content_type, _multipart_chunks(parser, state, stream))


def receiver(request: Request, max_bytes: int) -> Callable[[], Awaitable[IncomingFile]]:
    """`incoming_file` for later: the store calls it once the target item is known to exist."""
    return lambda: incoming_file(request, max_bytes)


async def _raw_chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _multipart_chunks(
    parser: MultipartParser, state: _PartState, stream: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    while True:
        while state.pending:
            yield state.pending.pop(0)
        if state.file_done:
            await _drain(stream)
            return
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        try:
            parser.write(chunk)
        except Exception as exc:
            raise HTTPException(422, f"malformed multipart body: {exc}") from exc
    while state.pending:
        yield state.pending.pop(0)
    if not state.file_done:
        raise HTTPException(422, "multipart body ended before the file part was complete")


async def _drain(stream: AsyncIterator[bytes]) -> None:
    # Read the closing boundary so the connection can be reused for the next request.
    while True:
        try:
            await stream.__anext__()
        except StopAsyncIteration:
            return
