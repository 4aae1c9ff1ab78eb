"""Which calls are retried, and Retry-After."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import pytest

from flrepo.client import (
    NotFound,
    RateLimited,
    Retry,
    Unavailable,
    calls,
)
from tests.client.sdk import (
    FAST,
    FLAVOURS,
    Flaky,
    pipe_with,
    puts,
    run,
    sha,
)

# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_retries_only_what_is_safe_to_repeat(live_server, connect, tmp_path, flavour):
    def client(plan: list[Any]) -> tuple[Any, Flaky]:
        transport = Flaky(plan)
        return connect(flavour, live_server.url, transport=transport), transport

    # Reads: after connection errors, timeouts and 503s.
    c, t = client([httpx.ConnectError, httpx.ReadTimeout])
    assert (await run(c.health))["status"] == "ok" and len(t.requests) == 3
    c, t = client([503, 503])
    assert (await run(c.list_models)).total == 0 and len(t.requests) == 3
    c, t = client([503] * 3)
    with pytest.raises(Unavailable) as gave_up:
        await run(c.list_models)
    assert gave_up.value.status == 503 and gave_up.value.detail == "injected: database unavailable"
    assert len(t.requests) == FAST.attempts
    c, t = client([httpx.ConnectError] * 5)
    with pytest.raises(Unavailable, match="ConnectError"):
        await run(c.get_model, "m", "v1")
    assert len(t.requests) == FAST.attempts

    # A create that may have reached the server is sent once ...
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable, match="ReadTimeout") as timed_out:
        await run(c.create_model, "m", "v1", "numpy")
    assert isinstance(timed_out.value.__cause__, httpx.ReadTimeout) and len(t.requests) == 1
    c, t = client([503])
    with pytest.raises(Unavailable, match="503"):
        await run(c.create_model, "m", "v1", "numpy")
    assert len(t.requests) == 1
    plain = connect(flavour, live_server.url)
    with pytest.raises(NotFound):
        await run(plain.get_model, "m", "v1")  # neither reached the server
    # ... but one whose connection was refused never reached it.
    c, t = client([httpx.ConnectError])
    assert (await run(c.create_model, "m", "v1", "numpy")).model_name == "m" and len(t.requests) == 2
    assert [q.method for q in t.requests] == ["POST", "POST"]

    # A whole-value replacement is repeated; a delete is not.
    c, t = client([httpx.ReadTimeout])
    await run(c.update_model_meta, "m", "v1", {"library": "numpy", "retried": True})
    assert len(t.requests) == 2 and (await run(plain.get_model, "m", "v1")).meta["retried"] is True
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable):
        await run(c.delete_model, "m", "v1")
    assert len(t.requests) == 1
    await run(plain.get_model, "m", "v1")  # still there

    # Uploads: a re-readable source is sent again, a pipe only after a refused connection.
    data = os.urandom(100_000)
    source = tmp_path / "w.bin"
    source.write_bytes(data)
    # (Counting PUTs: without an ETag in the answer, a HEAD then asks what was stored.)
    c, t = client([httpx.ReadTimeout, 503])
    assert (await run(c.upload_model, "m", "v1", source)).sha256 == sha(data)
    assert puts(t) == 3 and (await run(plain.get_model, "m", "v1")).sha256 == sha(data)
    c, t = client([httpx.ReadTimeout])
    with pytest.raises(Unavailable), pipe_with(b"streamed") as pipe:
        await run(c.upload_model, "m", "v1", pipe)
    assert puts(t) == 1
    c, t = client([httpx.ConnectError])
    with pipe_with(b"streamed") as pipe:
        await run(c.upload_model, "m", "v1", pipe)
    assert puts(t) == 2 and (await run(plain.get_model, "m", "v1")).sha256 == sha(b"streamed")

    # Downloads are reads.
    c, t = client([503, httpx.ReadTimeout])
    assert await run(c.read, calls.model_file("m", "v1")) == b"streamed" and len(t.requests) == 3


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_retry_after_is_honoured_within_bounds(live_server, connect, flavour):
    def client(plan: list[Any]) -> tuple[Any, Flaky]:
        transport = Flaky(plan)
        return connect(flavour, live_server.url, transport=transport), transport

    # A 503 asking for a second: the next try comes after it, not after FAST's few milliseconds.
    c, t = client([(503, {"Retry-After": "1"})])
    started = asyncio.get_running_loop().time()
    assert (await run(c.list_models)).total == 0 and len(t.requests) == 2
    assert asyncio.get_running_loop().time() - started >= 0.95
    # 429 (a proxy limiting the rate) is retried like 503; an HTTP date already past means now.
    c, t = client([(429, {"Retry-After": "0"}), (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})])
    assert (await run(c.health))["status"] == "ok" and len(t.requests) == 3
    # Longer than Retry.max_wait_s: raised at once, with the wait asked for.
    c, t = client([(503, {"Retry-After": "120"})])
    started = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable) as later:
        await run(c.get_model, "m", "v1")
    assert later.value.retry_after == 120 and len(t.requests) == 1
    assert asyncio.get_running_loop().time() - started < 5
    c, t = client([(503, {"Retry-After": "1"})])
    c.client.retry = Retry(attempts=3, base_s=0.001, cap_s=0.005, max_wait_s=0.5)
    with pytest.raises(Unavailable):
        await run(c.list_models)
    assert len(t.requests) == 1
    # Bounded: attempts still cap the tries; 429 is RateLimited, an Unavailable.
    c, t = client([(429, {"Retry-After": "0"})] * 5)
    with pytest.raises(RateLimited) as limited:
        await run(c.list_models)
    assert isinstance(limited.value, Unavailable) and limited.value.status == 429 and len(t.requests) == FAST.attempts
    # A create is still sent once, whatever Retry-After says.
    c, t = client([(503, {"Retry-After": "0"})])
    with pytest.raises(Unavailable):
        await run(c.create_model, "m", "v1", "numpy")
    assert len(t.requests) == 1
