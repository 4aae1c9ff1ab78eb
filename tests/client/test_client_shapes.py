"""Both clients expose every call with the same signatures; which calls may be sent twice; an answer
that is not the API."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest

from flrepo.client import (
    AsyncRepositoryClient,
    RepositoryClient,
    RepositoryError,
    calls,
)
from flrepo.client.endpoint import AsyncEndpoint, AsyncPager, SyncEndpoint, SyncPager
from tests.client.sdk import (
    public_methods,
)

# --- the two clients --------------------------------------------------------------------------


def test_both_clients_expose_every_call_shape_with_the_same_signature():
    assert public_methods(RepositoryClient) == public_methods(AsyncRepositoryClient)
    shapes = {
        name
        for name, fn in vars(calls).items()
        if inspect.isfunction(fn)
        and not name.startswith("_")
        and str(fn.__annotations__.get("return", "")).startswith("Call[")
    }
    assert len(shapes) == 34
    # Every list call that pages (limit + offset) has an iterator over all its pages.
    paged = {name for name in shapes if {"limit", "offset"} <= set(inspect.signature(getattr(calls, name)).parameters)}
    assert len(paged) == 10
    pagers: dict[str, Any] = {}
    for cls, endpoint, pager in (
        (RepositoryClient, SyncEndpoint, SyncPager),
        (AsyncRepositoryClient, AsyncEndpoint, AsyncPager),
    ):
        endpoints = {name for name, value in vars(cls).items() if isinstance(value, endpoint)}
        assert endpoints == shapes, (cls.__name__, endpoints ^ shapes)
        for name in shapes:
            assert vars(cls)[name].shape is getattr(calls, name)
        pagers[cls.__name__] = {name: value.shape for name, value in vars(cls).items() if isinstance(value, pager)}
        assert {shape.__name__ for shape in pagers[cls.__name__].values()} == paged
        assert all(name.startswith("iter_") for name in pagers[cls.__name__])
    assert pagers["RepositoryClient"] == pagers["AsyncRepositoryClient"]
    for name in public_methods(RepositoryClient):
        sync_method, async_method = getattr(RepositoryClient, name), getattr(AsyncRepositoryClient, name)
        assert inspect.signature(sync_method) == inspect.signature(async_method), name
        assert not inspect.iscoroutinefunction(sync_method), name
        if name.startswith("iter_"):
            assert inspect.isgeneratorfunction(sync_method) and inspect.isasyncgenfunction(async_method), name
            assert "page_size" in inspect.signature(sync_method).parameters, name
            assert not {"limit", "offset"} & set(inspect.signature(sync_method).parameters), name
        else:
            assert inspect.iscoroutinefunction(async_method), name


def test_idempotency_flags_of_the_call_shapes():
    assert calls.get_model("m", "v").idempotent and calls.list_tasks().idempotent
    assert calls.update_model_meta("m", "v", {}).idempotent and calls.update_strategy_meta("s", {}).idempotent
    for call in (
        calls.create_model("m", "v", "numpy"),
        calls.delete_model("m", "v"),
        calls.create_task(model={"model_name": "m", "model_version": "v"}, strategy={"strategy_name": "s"}),
        calls.update_task_status("t", phase="Running"),  # appends to the history: never sent twice
        calls.cancel_task("t"),
        calls.delete_task("t"),
    ):
        assert not call.idempotent, call


def test_an_answer_that_is_not_the_api_is_a_clear_error():
    """Something else on the port (a proxy's login page): a RepositoryError naming the host."""
    page = httpx.MockTransport(lambda request: httpx.Response(200, html="<html>login</html>"))
    with RepositoryClient("http://proxy.example", transport=page) as repo:
        with pytest.raises(RepositoryError, match=r"unexpected answer.*is proxy\.example an FL repository"):
            repo.list_models()
