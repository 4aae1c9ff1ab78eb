"""What the web console's tests share: the API keys of each role, a Chromium page on the console that
records every request it makes, and a task to look at."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flrepo.server.auth import hash_key
from tests.helpers import LiveServer

KEYS = {role: f"console-key-of-{role}" for role in ("reader", "writer", "admin")}


def keys_file(directory: Path) -> Path:
    path = directory / "keys.yaml"
    entries = [{"id": f"{role}-1", "role": role, "sha256": hash_key(key)} for role, key in KEYS.items()]
    path.write_text(yaml.safe_dump(entries))
    return path


CHROMIUM = os.environ.get("FLREPO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
FIRST_RENDER_MS = 1000


def need_browser() -> None:
    missing = None
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(missing)


class Console:
    """A Chromium page on the console of `base`, recording every request it makes."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))

    def open(self, fragment: str, poll_ms: int | None = None) -> None:
        query = f"?poll={poll_ms}" if poll_ms else ""
        self.page.goto(f"{self.base}/ui{query}#{fragment}")

    def sign_in(self, key: str) -> None:
        self.page.fill("#api-key", key)
        self.page.click("#key-form button[type=submit]")

    def rendered(self, timeout_ms: float = 20_000) -> float:
        """Milliseconds from navigation to the view's first render (the page stamps it on <main>)."""
        self.page.wait_for_selector("main[data-rendered]", timeout=timeout_ms)
        return float(self.page.get_attribute("main", "data-rendered") or "nan")

    def leaks(self) -> list[str]:
        """Words of JavaScript's own leaking into the page's text (a missing value printed as is)."""
        return re.findall(r"\b(?:null|undefined|NaN|\[object Object\])", self.page.inner_text("body"))

    def outside(self) -> list[str]:
        """Requests to anywhere but the service (data: and blob: URLs are the page's own memory)."""
        local = (self.base + "/", "data:", "blob:")
        return [url for url in self.requests if not url.startswith(local)]


@contextmanager
def chromium(viewport: dict[str, int] | None = None) -> Iterator[Any]:
    need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
        finally:
            browser.close()


def admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": KEYS["admin"]}, timeout=30)


def make_pending_task(api: httpx.Client, task_id: str) -> None:
    """A task over a model, a strategy and a transformation that all have files."""
    for path, body in (
        ("/model", {"model_name": "m", "model_version": "v1", "meta": {"library": "numpy"}}),
        ("/strategy", {"strategy_name": "fedavg"}),
        ("/transformation", {"id": "scale", "parameter_types": {}, "default_values": {}, "outputs": [], "needs": {}}),
    ):
        r = api.post(path, json=body)
        assert r.status_code in (201, 409), r.text
    for path in ("/model/m/v1", "/strategy/fedavg", "/transformation/scale"):
        assert api.put(path, files={"file": ("f.bin", b"bytes of " + path.encode())}).status_code == 204
    body = {
        "task_id": task_id,
        "model": {"model_name": "m", "model_version": "v1"},
        "strategy": {"strategy_name": "fedavg"},
        "transformations": [{"id": "scale"}],
        "rounds": 20,
    }
    assert api.post("/tasks", json=body).status_code == 201
