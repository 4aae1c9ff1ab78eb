"""flrepo's SuperLink and SuperNode run Flower's plain-function endpoints on the event loop's thread
(flrepo.fl.message.inline_endpoints); the answers are FastAPI's own."""

from __future__ import annotations

import importlib
import threading

import pytest

pytest.importorskip("flwr")

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from flrepo.fl.message import inline_endpoints


def app_reporting_threads() -> tuple[FastAPI, dict[str, int]]:
    seen: dict[str, int] = {}
    app = FastAPI()

    def dependency() -> int:
        seen["dependency"] = threading.get_ident()
        return 2

    @app.post("/v1/fleet/thing")
    def endpoint(factor: int = Depends(dependency)) -> dict[str, int]:
        seen["endpoint"] = threading.get_ident()
        return {"answer": 21 * factor}

    @app.middleware("http")
    async def loop_thread(request, call_next):  # type: ignore[no-untyped-def]
        seen["loop"] = threading.get_ident()
        return await call_next(request)

    return app, seen


def test_flowers_plain_endpoints_and_dependencies_run_on_the_loops_thread_once_installed(monkeypatch):
    for name in inline_endpoints.MODULES:  # restored after the test: other tests' apps keep FastAPI's own
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "run_in_threadpool", module.run_in_threadpool)
    app, seen = app_reporting_threads()
    with TestClient(app) as client:
        assert client.post("/v1/fleet/thing").json() == {"answer": 42}
        assert seen["endpoint"] != seen["loop"] and seen["dependency"] != seen["loop"]  # FastAPI's threads
        inline_endpoints.install()
        assert client.post("/v1/fleet/thing").json() == {"answer": 42}
        assert seen["endpoint"] == seen["loop"] == seen["dependency"]


def test_installing_fails_loudly_when_fastapi_no_longer_calls_run_in_threadpool(monkeypatch):
    monkeypatch.delattr(importlib.import_module("fastapi.routing"), "run_in_threadpool")
    with pytest.raises(RuntimeError, match="run_in_threadpool"):
        inline_endpoints.install()
