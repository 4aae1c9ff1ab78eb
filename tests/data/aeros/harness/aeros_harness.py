"""A pytest plugin that runs aerOS 1.1.0's own unit tests, unchanged, against a live flrepo.

aerOS's tests import `application.main.app`, give it `app.client = mongomock.MongoClient()`, seed that
database with `gridfs.GridFS(...).put` and `db.<collection>.insert_one(Model(...).dict())`, and call
the API through FastAPI 0.83's `TestClient` (a `requests.Session`). This plugin supplies exactly those
names, pointed at the real thing:

- `mongomock.MongoClient()`: a pymongo client whose `repository` / `repository_grid` databases are the
  ones the live flrepo serves (a fresh pair per test file, made by the runner);
- `fastapi.testclient.TestClient`: a `requests.Session` that sends every request to the live flrepo;
- `application.main.app`: an object that holds whatever `client` the tests give it.

`application.datamodels.models` is aerOS's own file. Configuration comes from the environment:
AEROS_HARNESS_URL, AEROS_HARNESS_MONGODB_URL, AEROS_HARNESS_DB, AEROS_HARNESS_GRID_DB.
Only requests, pymongo (with gridfs) and pytest are needed, so aerOS's own pinned versions work too.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any
from urllib.parse import urljoin

import pymongo
import requests

URL = os.environ["AEROS_HARNESS_URL"]
NAMES = {"repository": os.environ["AEROS_HARNESS_DB"], "repository_grid": os.environ["AEROS_HARNESS_GRID_DB"]}


class MongoClient:
    """What `mongomock.MongoClient()` is to aerOS's tests: the live service's databases, by aerOS's names."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: pymongo.MongoClient = pymongo.MongoClient(os.environ["AEROS_HARNESS_MONGODB_URL"])

    def __getitem__(self, name: str) -> Any:
        return self._client[NAMES.get(name, name)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def close(self) -> None:
        self._client.close()


class TestClient(requests.Session):
    """FastAPI 0.83's TestClient is a requests.Session; this one talks to the live flrepo over HTTP."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, app: Any, base_url: str = "http://testserver", **kwargs: Any) -> None:
        super().__init__()
        self.app = app

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        return super().request(method, urljoin(URL, str(url)), *args, **kwargs)


class _App:
    """aerOS's `app`: the tests only ever set and read its `client`."""

    client: Any = None


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def pytest_configure(config: Any) -> None:
    gridfs_integration = _module("mongomock.gridfs", enable_gridfs_integration=lambda: None)
    _module("mongomock", MongoClient=MongoClient, gridfs=gridfs_integration)
    _module("fastapi.testclient", TestClient=TestClient)
    _module("application.main", app=_App())
