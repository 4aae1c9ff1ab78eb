"""The web console in headless Chromium (Playwright, as the Swagger UI test): roles, the first render
of every page on a store with 1,000 models and 100 tasks, and no request leaving the service. The
live demo task is followed in tests/server/test_console_demo.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from flrepo.schemas.tasks import RoundRecord
from flrepo.server.main import create_app
from tests.helpers import LiveServer, drop, make_settings
from tests.server.console_pages import FIRST_RENDER_MS, KEYS, Console, admin, chromium, keys_file, make_pending_task


@pytest.fixture
def keyed_server(mongo_url, tmp_path) -> Iterator[LiveServer]:
    settings = make_settings(mongo_url, api_keys_file=keys_file(tmp_path))
    try:
        with LiveServer(create_app(settings)) as server:
            yield server
    finally:
        drop(settings)


def test_a_reader_sees_everything_but_no_cancel_and_its_cancel_call_is_refused(keyed_server):
    with admin(keyed_server) as api:
        make_pending_task(api, "t-reader")
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/tasks/t-reader")
        console.sign_in(KEYS["reader"])
        console.rendered()
        assert console.page.get_attribute("#role", "data-role") == "reader"
        assert console.page.get_attribute("main", "data-phase") == "Pending"
        assert console.page.locator("#cancel").count() == 0
        assert console.leaks() == []
        # The same call a Cancel button would make, sent by the page with the reader's key.
        status = console.page.evaluate(
            """async () => (await fetch('/tasks/t-reader/cancel', {method: 'POST',
                 headers: {'X-API-Key': sessionStorage.getItem('flrepo.apiKey'), 'Content-Type': 'application/json'},
                 body: '{}'})).status"""
        )
        assert status == 403
        # A writer (in a new tab: the key is per tab) sees the button, and it cancels.
        writer = Console(context.new_page(), keyed_server.url)
        writer.open("/tasks/t-reader")
        writer.sign_in(KEYS["writer"])
        writer.rendered()
        writer.page.click("#cancel")
        writer.page.wait_for_selector("main[data-phase=Failed]", timeout=20_000)
        assert writer.page.locator("#cancel").count() == 0
        assert "Cancelled" in writer.page.inner_text("#conditions")
        assert console.outside() == [] and writer.outside() == []
        assert not any("cookie" in name.lower() for name in context.cookies())


def test_a_wrong_key_is_refused_and_asked_for_again(keyed_server):
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/models")
        console.sign_in("not a key")
        console.page.wait_for_selector("#key-form [role=alert]", timeout=20_000)
        console.sign_in(KEYS["reader"])
        console.page.wait_for_selector("#models-table", timeout=20_000)
        assert context.cookies() == []


# --- a store with 1,000 models and 100 tasks -----------------------------------------------------


def seed_models(db: Any, count: int) -> None:
    """`count` model versions as the repository stores them (with a file), inserted at once."""
    now = datetime.now(UTC)
    docs = [
        {
            "model_name": f"model-{n // 4:03d}",
            "model_version": f"v{n % 4}",
            "meta": {"library": "numpy", "description": f"seeded model {n}"},
            "model_id": f"{n:024x}",
            "size": 1000 + n,
            "sha256": f"{n:064x}",
            "content_type": "application/octet-stream",
            "filename": f"model-{n}.npz",
            "uploaded_at": now,
            "created_at": now - timedelta(minutes=n),
            "updated_at": now,
        }
        for n in range(count)
    ]
    db["models"].insert_many(docs)


def seed_tasks(api: httpx.Client, count: int, rounds: int) -> str:
    """`count` tasks through the API; the last one Running with `rounds` round records. Its id."""
    make_pending_task(api, "task-000")
    for n in range(1, count):
        body = {"task_id": f"task-{n:03d}", "model": {"model_name": "m", "model_version": "v1"}}
        r = api.post("/tasks", json={**body, "strategy": {"strategy_name": "fedavg"}, "rounds": 20})
        assert r.status_code == 201, r.text
    busy = f"task-{count - 1:03d}"
    api.put(f"/tasks/{busy}/status", json={"phase": "Running"}).raise_for_status()
    for k in range(1, rounds + 1):
        record = {"round": k, "loss": 2.0 / k, "metrics": {"accuracy": 1 - 1 / (k + 1)}, "participants": 3}
        participants = [
            {"node_id": f"site-{s}", "samples": 100, "last_round": k, "metrics": {"train_loss": 2.1 / k}}
            for s in range(3)
        ]
        report = {"current_round": k, "round": record, "participants": participants, "active": 3}
        api.put(f"/tasks/{busy}/status", json=report).raise_for_status()
    return busy


def test_every_page_renders_within_a_second_with_1000_models_and_100_tasks(keyed_server, mongo_url):
    settings = keyed_server.server.config.app.state.settings  # type: ignore[attr-defined]
    with MongoClient(mongo_url) as client:
        seed_models(client[settings.db_name], 1000)
    with admin(keyed_server) as api:
        busy = seed_tasks(api, 100, rounds=20)
        assert api.get("/model", params={"limit": 1}).headers["x-total-count"] == "1001"
    pages = ["/models", "/tasks", f"/tasks/{busy}", "/models/model-000/v1", "/code"]
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/models")
        console.sign_in(KEYS["reader"])  # the key stays in this tab's session for the pages below
        console.rendered()
        times: dict[str, float] = {}
        for fragment in pages:
            # The best of three loads: one slow load on a busy machine is not the page's cost.
            runs = []
            for _ in range(3):
                console.open(fragment)
                console.page.reload()  # a fresh document each time (a fragment change would not reload)
                runs.append(console.rendered())
            times[fragment] = min(runs)
            # Readable at 1280x800: nothing wider than the window (wide tables scroll in their own box).
            assert console.page.evaluate("document.documentElement.scrollWidth") <= 1280, fragment
            assert console.leaks() == [], fragment
        console.open(f"/tasks/{busy}")
        console.page.reload()
        console.rendered()
        assert console.page.locator("#rounds-table tbody tr").count() == 20
        assert console.leaks() == []
        assert console.outside() == []
    print("first render (ms, best of 3):", {k: round(v) for k, v in times.items()})
    slow = {fragment: ms for fragment, ms in times.items() if ms > FIRST_RENDER_MS}
    assert not slow, f"pages slower than {FIRST_RENDER_MS} ms to first render: {slow}"
    assert all(ms > 0 for ms in times.values()), times


def test_readable_at_phone_width(keyed_server):
    with admin(keyed_server) as api:
        make_pending_task(api, "t-phone")
    with chromium({"width": 390, "height": 844}) as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/tasks/t-phone")
        console.sign_in(KEYS["reader"])
        console.rendered()
        # Nothing but scrollable tables is wider than the screen.
        width = console.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        assert console.leaks() == []
        # Keyboard, on a fresh load (the key is kept in the tab): Tab reaches the skip link first, then
        # the sections.
        console.page.reload()
        console.rendered()
        console.page.keyboard.press("Tab")
        assert console.page.evaluate("document.activeElement.textContent") == "Skip to content"
        console.page.keyboard.press("Tab")
        assert console.page.evaluate("document.activeElement.getAttribute('href')") == "#/models"
        console.page.keyboard.press("Enter")
        console.page.wait_for_selector("#models-table", timeout=20_000)
        assert console.page.get_attribute("nav a[href='#/models']", "aria-current") == "page"


HIDE = """hidden => {
    Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_a_running_task_is_polled_only_while_the_tab_is_visible(keyed_server):
    with admin(keyed_server) as api:
        make_pending_task(api, "t-live")
        api.put("/tasks/t-live/status", json={"phase": "Running"}).raise_for_status()
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/tasks/t-live", poll_ms=250)
        console.sign_in(KEYS["reader"])
        console.rendered()
        polled = "**/tasks/t-live?history=*"
        with console.page.expect_request(polled, timeout=20_000):
            pass  # polling runs while visible
        console.page.evaluate(HIDE, True)
        # Whatever was in flight when the tab was hidden has ended; from then on, no call for 8 intervals.
        console.page.wait_for_load_state("networkidle", timeout=20_000)
        before = len(console.requests)
        console.page.wait_for_timeout(2000)  # a span with nothing expected in it (the check is its silence)
        assert len(console.requests) == before, console.requests[before:]
        assert console.page.evaluate("() => window.flrepoConsole.stats.paused") is True
        with console.page.expect_request(polled, timeout=5_000):
            console.page.evaluate(HIDE, False)  # shown again: refreshed at once


@pytest.mark.skipif(
    "bytes_up" not in RoundRecord.model_fields, reason="round records carry no bytes_up/bytes_down yet (compression)"
)
def test_bytes_per_round_are_shown_when_the_history_records_them(keyed_server):
    with admin(keyed_server) as api:
        make_pending_task(api, "t-bytes")
        api.put("/tasks/t-bytes/status", json={"phase": "Running"}).raise_for_status()
        for k in (1, 2):
            record = {"round": k, "loss": 1.0 / k, "bytes_up": 1000 * k, "bytes_down": 4000 * k}
            api.put("/tasks/t-bytes/status", json={"current_round": k, "round": record}).raise_for_status()
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/tasks/t-bytes")
        console.sign_in(KEYS["reader"])
        console.rendered()
        head = console.page.inner_text("#rounds-table thead")
        assert "Bytes up" in head and "Bytes down" in head
        assert "3.9 KiB" in console.page.inner_text("#rounds-table tbody tr[data-round='1']")
        points = console.page.get_attribute("[data-chart=bytes] g.series", "data-points")
        assert points == "2"


def test_without_keys_configured_the_console_asks_for_none(live_server):
    with chromium() as context:
        console = Console(context.new_page(), live_server.url)
        console.open("/models")
        console.page.wait_for_selector("#models-table", timeout=20_000)
        assert console.page.locator("#key-form").count() == 0
        assert console.page.inner_text("#who") == "anonymous · admin"
        assert console.leaks() == [] and console.outside() == []


def test_stored_names_are_shown_as_text_never_as_markup(keyed_server):
    name, version = "<b>bold<b>", "<img src=x onerror=window.pwned=1>"  # names hold no "/"
    with admin(keyed_server) as api:
        body = {"model_name": name, "model_version": version, "meta": {"library": "<i>numpy</i>", "k": "<script>"}}
        assert api.post("/model", json=body).status_code == 201
    with chromium() as context:
        console = Console(context.new_page(), keyed_server.url)
        console.open("/models")
        console.sign_in(KEYS["reader"])
        console.page.wait_for_selector("#models-table", timeout=20_000)
        table = console.page.inner_text("#models-table")
        assert name in table and version in table and "<i>numpy</i>" in table
        assert console.page.locator("#models-table tbody b, #models-table img, #models-table i").count() == 0
        console.page.click(f"#models-table a:text-is('{version}')")
        console.page.wait_for_selector("#lineage", timeout=20_000)
        assert f"{name} / {version}" in console.page.inner_text("h1")
        assert console.page.evaluate("() => window.pwned") is None
        console.open("/tasks/no-such-task")
        console.page.wait_for_selector("main [role=alert]", timeout=20_000)
        assert "not found" in console.page.inner_text("main [role=alert]")
        assert console.outside() == []
