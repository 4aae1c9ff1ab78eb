"""Resumable uploads for large files: the tus 1.0 protocol the service speaks at /uploads.

A file of at least FLREPO_TUS_THRESHOLD_BYTES (default 64 MiB; `tus_threshold=` on the clients) that
can be re-read (a path or a seekable file) is sent as a tus upload instead of one PUT: created for its
target path, then sent in parts of PART_BYTES, each with its sha256 in `Upload-Checksum`. A dropped
connection or a 503 costs only the part in flight: the client asks the server for the offset (HEAD) and
goes on from there. The server attaches the file to its target exactly as a PUT would.

`TusUpload` holds the protocol's logic; `send` (blocking) and `send_async` do the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx

from flrepo.client.errors import RepositoryError, error_for
from flrepo.client.retry import Attempts, Retry
from flrepo.client.transfer import Upload

if TYPE_CHECKING:
    from flrepo.client.base import AsyncSender, Sender

THRESHOLD_ENV = "FLREPO_TUS_THRESHOLD_BYTES"
DEFAULT_THRESHOLD = 64 * 1024 * 1024
PART_BYTES = 8 * 1024 * 1024
VERSION = {"Tus-Resumable": "1.0.0"}
# Answers after which the part is sent again (after learning the offset): a conflict over the offset
# (a part the server kept while the answer was lost), a busy upload, a checksum mismatch, no database.
RETRIED = {409, 423, 460, 503}


def threshold(value: int | None = None) -> int:
    """The size from which uploads use tus: `value`, else FLREPO_TUS_THRESHOLD_BYTES, else 64 MiB."""
    if value is not None:
        return value
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{THRESHOLD_ENV} must be a number of bytes, not {raw!r}") from None


def wanted(upload: Upload, limit: int) -> bool:
    """Whether this upload goes through tus: large enough, of known size, and re-readable to resume."""
    return upload.size is not None and upload.size > 0 and upload.size >= limit and upload.repeatable


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class TusUpload:
    """One file's tus upload: the requests to make, and what their answers mean (no I/O here)."""

    def __init__(self, target: str, upload: Upload, part_bytes: int = PART_BYTES) -> None:
        assert upload.size is not None
        self.target = target
        self.upload = upload
        self.size = upload.size
        self.part_bytes = part_bytes
        self.url: str | None = None
        self.offset = 0

    def creation_headers(self) -> dict[str, str]:
        pairs = {"target": unquote(self.target), "filename": self.upload.filename}
        metadata = ",".join(f"{key} {_b64(value)}" for key, value in pairs.items())
        return {**VERSION, "Upload-Length": str(self.size), "Upload-Metadata": metadata}

    def created(self, response: httpx.Response) -> None:
        location = response.headers.get("location")
        if response.status_code != 201 or not location:
            raise (
                error_for(response)
                if response.status_code >= 400
                else RepositoryError(
                    f"the server created no upload (status {response.status_code})", status=response.status_code
                )
            )
        self.url = location

    def read_part(self) -> bytes:
        """The next part's bytes (blocking file I/O)."""
        upload = self.upload
        start = self.offset
        if upload.path is not None:
            with upload.path.open("rb") as handle:
                handle.seek(start)
                return handle.read(self.part_bytes)
        source: Any = upload.source
        source.seek(upload.start + start)
        return bytes(source.read(self.part_bytes))

    def part_headers(self, data: bytes) -> dict[str, str]:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        return {
            **VERSION,
            "Upload-Offset": str(self.offset),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": f"sha256 {checksum}",
        }

    def answered(self, response: httpx.Response) -> bool:
        """Take a part's answer: True when it moved the offset on, False when the part is to be sent
        again after asking for the offset; raises the typed error of a final refusal."""
        if response.status_code in RETRIED:
            return False
        if response.status_code >= 400:
            raise error_for(response)
        self._moved(response)
        return True

    def learned(self, response: httpx.Response) -> None:
        """The HEAD answer: where the server's copy ends."""
        if response.status_code >= 400:
            raise error_for(response)
        self._moved(response)

    def _moved(self, response: httpx.Response) -> None:
        value = response.headers.get("upload-offset", "")
        if not value.isdigit() or not 0 <= int(value) <= self.size:
            raise RepositoryError(
                f"the server sent no valid Upload-Offset ({value[:40]!r})", status=response.status_code
            )
        self.offset = int(value)
        if self.upload.progress:
            self.upload.progress(self.offset, self.size)

    @property
    def done(self) -> bool:
        return self.offset >= self.size


def send(client: Sender, target: str, upload: Upload, part_bytes: int | None = None) -> None:
    """Upload `upload` to the file path `target` with tus, resuming after failures (blocking)."""
    state = TusUpload(target, upload, part_bytes or PART_BYTES)
    state.created(client.request("POST", "/uploads", False, headers=state.creation_headers()))
    assert state.url is not None
    while not state.done:
        plan = Attempts(client.retry, True, client.base_url)
        while True:
            data = state.read_part()
            try:
                response = client.http.patch(state.url, content=data, headers=state.part_headers(data))
            except httpx.TransportError as exc:
                delay = plan.after_error(exc)
            else:
                if state.answered(response):
                    break
                delay = _delay(plan, response, client.retry)
            time.sleep(delay)
            state.learned(client.request("HEAD", state.url, True, headers=VERSION))


async def send_async(client: AsyncSender, target: str, upload: Upload, part_bytes: int | None = None) -> None:
    """The same, for the async client (file reads in a worker thread)."""
    state = TusUpload(target, upload, part_bytes or PART_BYTES)
    state.created(await client.request("POST", "/uploads", False, headers=state.creation_headers()))
    assert state.url is not None
    while not state.done:
        plan = Attempts(client.retry, True, client.base_url)
        while True:
            data = await asyncio.to_thread(state.read_part)
            try:
                response = await client.http.patch(state.url, content=data, headers=state.part_headers(data))
            except httpx.TransportError as exc:
                delay = plan.after_error(exc)
            else:
                if state.answered(response):
                    break
                delay = _delay(plan, response, client.retry)
            await asyncio.sleep(delay)
            state.learned(await client.request("HEAD", state.url, True, headers=VERSION))


def _delay(plan: Attempts, response: httpx.Response, retry: Retry) -> float:
    """The wait before sending a part again; raises once the retry policy's attempts are used up."""
    plan.done += 1
    if plan.done >= max(1, retry.attempts):
        raise error_for(response)
    return retry.delay(plan.done - 1)
