"""Swagger UI and ReDoc, served with their own assets (no CDN), and what a browser shows there."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

CHROMIUM = os.environ.get("FLREPO_CHROMIUM", "/usr/bin/chromium")


async def test_docs_pages_use_local_assets(client):
    for path in ("/docs", "/redoc"):
        r = await client.get(path)
        assert r.status_code == 200
        assert "cdn.jsdelivr.net" not in r.text and "unpkg.com" not in r.text
        assert "/static-offline-docs/" in r.text
    r = await client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert r.status_code == 200 and len(r.content) > 100_000


async def test_openapi_tags_models_and_examples(client):
    spec = (await client.get("/openapi.json")).json()
    tags = {tag for path in spec["paths"].values() for op in path.values() for tag in op.get("tags", [])}
    assert {"models", "training results", "strategies", "transformations", "service"} <= tags
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("tags"), (method, path)
            assert "503" in op["responses"] or path in ("/health",), (method, path)
    upload = spec["paths"]["/model/{model_name}/{model_version}"]["put"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    model_in = spec["components"]["schemas"]["ModelIn"]
    assert model_in["examples"][0]["meta"]["library"] == "keras"
    assert "model_name" in model_in["required"]


def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def test_swagger_ui_renders_operations_in_chromium(live_server, tmp_path):
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            external: list[str] = []
            page.on(
                "request",
                lambda req: external.append(req.url) if not req.url.startswith(live_server.url) else None,
            )
            page.goto(f"{live_server.url}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            text = page.inner_text("body")
            page.screenshot(path=os.environ.get("FLREPO_DOCS_SCREENSHOT", str(tmp_path / "docs.png")))
            ops = page.locator(".opblock").count()
        finally:
            browser.close()
    assert "/model/{model_name}/{model_version}" in text
    assert "/training-results" in text and "/strategy" in text and "/transformation" in text
    spec = httpx.get(f"{live_server.url}/openapi.json").json()
    assert ops == sum(len(methods) for methods in spec["paths"].values())
    assert [u for u in external if not u.startswith("data:")] == []
