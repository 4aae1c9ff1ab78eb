"""HTTP responses for stored files: Content-Length/Type/Disposition, ETag, HEAD and single Range."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pymongo.errors import PyMongoError
from starlette.types import Send

from flrepo.server.http.conditions import etag, none_match
from flrepo.server.http.responses import send_json
from flrepo.server.repository.items import FileView

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# A position with more digits than this is past any file's end (2**63 has 19 digits); reading it as an
# int would only burn CPU, or fail past Python's 4,300-digit limit.
_MAX_DIGITS = 19


def content_disposition(filename: str) -> str:
    # RFC 6266: an ASCII fallback for old clients, the exact UTF-8 name for the rest.
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Return (start, end inclusive) for one satisfiable range, None to send everything,
    or "unsatisfiable". Multi-range requests get the whole file, which RFC 9110 allows."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = (_position(group) for group in match.groups())
    if first is None and last is None:
        return None
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return "unsatisfiable"
        return max(size - last, 0), size - 1
    start = first
    end = last if last is not None else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _position(digits: str) -> int | None:
    """A range position; None when absent; positions too long to mean anything are "beyond any end"."""
    if not digits:
        return None
    stripped = digits.lstrip("0") or "0"
    return 2**63 if len(stripped) > _MAX_DIGITS else int(stripped)


def file_response(request: Request, view: FileView) -> Response:
    """The file as an attachment: whole, or one satisfiable Range (206), or 416; HEAD sends headers only;
    304 without a body when If-None-Match names the current file."""
    size = view.size
    sha = view.sha256
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(view.filename),
        # Downloads are attachments, never rendered: stored bytes must not run as a page here.
        "X-Content-Type-Options": "nosniff",
    }
    if sha:
        headers["ETag"] = etag(sha)
    # If-None-Match comes before Range and If-Range (RFC 9110 §13.2.2).
    if none_match(request.headers.get("if-none-match"), sha):
        # A 304 carries the ETag the 200 would have, and no body or Content-Length of its own.
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    # Always octet-stream: the uploader's declared type is recorded in the document but never
    # echoed, so stored bytes cannot be served as a page or script from this origin.
    media = "application/octet-stream"

    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    # If-Range (RFC 9110 §13.1.5): resume only while the file is the one the client started
    # with; otherwise send it whole so the client restarts instead of splicing two files.
    if if_range is not None and (not sha or if_range.strip() != etag(sha)):
        range_header = None
    wanted = parse_range(range_header, size)
    if wanted == "unsatisfiable":
        # An error like every other: JSON with a detail (and the size in Content-Range, RFC 9110 §15.5.17).
        headers["Content-Range"] = f"bytes */{size}"
        return JSONResponse(
            {"detail": f"range not satisfiable: the file has {size} bytes"}, status_code=416, headers=headers
        )
    status = 200
    start, length = 0, size
    if isinstance(wanted, tuple):
        start, end = wanted
        length = end - start + 1
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media)
    return FileStream(view.read(start, length), status_code=status, headers=headers, media_type=media)


class FileStream(StreamingResponse):
    """A stored file's bytes: the first chunk is read before the status line is sent, so a store that
    cannot deliver it gets a 503 the client can retry, not a 200 with a truncated body. A read that
    fails later (after the reader's retries) ends the connection early; the log says where."""

    async def stream_response(self, send: Send) -> None:
        body = aiter(self.body_iterator)
        try:
            first = await anext(body, None)
        except PyMongoError as exc:
            log.warning("file download refused before it started (503): %s", exc)
            await send_json(send, 503, "database unavailable, try again later")
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        try:
            while first is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                sent += len(first)
                first = await anext(body, None)  # type: ignore[arg-type]
        except PyMongoError as exc:
            log.error("file download aborted after %d of %s bytes: %s", sent, self.headers.get("content-length"), exc)
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})
