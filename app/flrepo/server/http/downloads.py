"""HTTP responses for stored files: Content-Length/Type/Disposition, ETag, HEAD and single Range."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from flrepo.server.repository.items import FileView

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def file_response(request: Request, view: FileView) -> Response:
    """The file as an attachment: whole, or one satisfiable Range (206), or 416; HEAD sends headers only."""
    size = view.size
    sha = view.sha256
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(view.filename),
        # Downloads are attachments, never rendered: stored bytes must not run as a page here.
        "X-Content-Type-Options": "nosniff",
    }
    if sha:
        headers["ETag"] = f'"{sha}"'
    # Always octet-stream: the uploader's declared type is recorded in the document but never
    # echoed, so stored bytes cannot be served as a page or script from this origin.
    media = "application/octet-stream"

    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    # If-Range (RFC 9110 §13.1.5): resume only while the file is the one the client started
    # with; otherwise send it whole so the client restarts instead of splicing two files.
    if if_range is not None and (not sha or if_range.strip() != f'"{sha}"'):
        range_header = None
    wanted = parse_range(range_header, size)
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers, media_type=media)
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
    return StreamingResponse(view.read(start, length), status_code=status, headers=headers, media_type=media)
