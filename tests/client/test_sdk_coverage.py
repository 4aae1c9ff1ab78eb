"""Every public method of both clients is called by the SDK tests."""

from __future__ import annotations

import pytest

from tests.client.sdk import CLASSES, USED, public_methods

# The modules whose tests use recorded clients (tests.client.sdk.Recorded).
SDK_MODULES = {
    "tests.client.test_client_shapes",
    "tests.client.test_json_calls",
    "tests.client.test_typed_errors",
    "tests.client.test_transfers",
    "tests.client.test_resume",
    "tests.client.test_retries",
    "tests.client.test_paging",
    "tests.client.test_signed_artifacts",
}


def test_every_public_method_was_called(request):
    """Runs last (see conftest): every public method of both clients was used by the SDK tests."""
    ran = {item.module.__name__ for item in request.session.items if getattr(item, "module", None)}
    narrowed = request.config.getoption("keyword") or request.config.getoption("markexpr")
    if request.session.testsfailed or narrowed or not SDK_MODULES <= ran:
        pytest.skip("only meaningful when every SDK test ran and passed")
    for flavour, cls in CLASSES.items():
        assert public_methods(cls) - USED[flavour] == set(), flavour
