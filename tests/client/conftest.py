"""Fixtures of the SDK tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flrepo.client import (
    AsyncRepositoryClient,
)
from tests.client.sdk import (
    CLASSES,
    FAST,
    PUBLISHER,
    Recorded,
)


@pytest.fixture(autouse=True)
def _no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FLREPO_URL",
        "FLREPO_API_KEY",
        "FLREPO_SIGNING_KEY",
        "FLREPO_SIGNING_KEY_FILE",
        "FLREPO_SIGNING_KEY_ID",
        "FLREPO_TRUSTED_KEYS",
        "FLREPO_TRUSTED_KEYS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """connect(flavour, url, **options): a Recorded client (fast retries, the publisher's keys), closed
    at the end of the test."""
    opened: list[Any] = []

    def make(flavour: str, url: str, **options: Any) -> Any:
        options.setdefault("retry", FAST)
        options.setdefault("keyring", PUBLISHER)
        client = CLASSES[flavour](url, **options)
        opened.append(client)
        return Recorded(client, flavour)

    yield make
    for client in opened:
        if isinstance(client, AsyncRepositoryClient):
            await client.aclose()
        else:
            client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check that every public method was used runs after the tests that use them."""
    last = [item for item in items if item.name == "test_every_public_method_was_called"]
    items[:] = [item for item in items if item not in last] + last
