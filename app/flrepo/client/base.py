"""What both clients share below their endpoints: the connection options, and a sender that makes one
request with the retry policy. RepositoryClient and AsyncRepositoryClient each hold a sender; the tus
uploader (flrepo.client.tus) uses the same senders, so it needs neither client.

The two senders are twins with one signature: `body` is a factory called for every attempt, so a
streamed request body is made afresh when a request is repeated.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import httpx

from flrepo.client.retry import Attempts, Retry

DEFAULT_URL = "http://127.0.0.1:9013"


def client_options(base_url: str | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    """httpx options shared by both clients; FLREPO_URL / FLREPO_API_KEY fill what is not given."""
    url = (base_url or os.environ.get("FLREPO_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("FLREPO_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # Connecting should be quick; reads may wait on a large file being written server-side.
    return {"base_url": url, "headers": headers, "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0))}


class Sender:
    """One blocking request at a time, repeated per the retry policy."""

    def __init__(self, http: httpx.Client, retry: Retry, base_url: str) -> None:
        self.http, self.retry, self.base_url = http, retry, base_url

    def request(
        self, method: str, path: str, idempotent: bool, body: Callable[[], Iterable[bytes]] | None = None, **kw: Any
    ) -> httpx.Response:
        """The final answer (an error status included, for the caller to read), or the typed error
        once the policy gives up on transport failures and retryable answers."""
        plan = Attempts(self.retry, idempotent, self.base_url)
        while True:
            try:
                response = self.http.request(method, path, content=body() if body else None, **kw)
            except httpx.TransportError as exc:
                delay = plan.after_error(exc)
            else:
                wait = plan.after_response(response)
                if wait is None:
                    return response
                delay = wait
            time.sleep(delay)


class AsyncSender:
    """The asyncio twin of Sender."""

    def __init__(self, http: httpx.AsyncClient, retry: Retry, base_url: str) -> None:
        self.http, self.retry, self.base_url = http, retry, base_url

    async def request(
        self,
        method: str,
        path: str,
        idempotent: bool,
        body: Callable[[], AsyncIterable[bytes]] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """As Sender.request, awaited."""
        plan = Attempts(self.retry, idempotent, self.base_url)
        while True:
            try:
                response = await self.http.request(method, path, content=body() if body else None, **kw)
            except httpx.TransportError as exc:
                delay = plan.after_error(exc)
            else:
                wait = plan.after_response(response)
                if wait is None:
                    return response
                delay = wait
            await asyncio.sleep(delay)
