"""Every public method of both clients is called by the SDK tests."""

from __future__ import annotations

import pytest

from tests.client.sdk import CLASSES, SDK_MODULES, USED, public_methods


def test_every_public_method_was_called(request):
    """Runs last (see conftest): every public method of both clients was used by the SDK tests."""
    ran = {item.module.__name__ for item in request.session.items if getattr(item, "module", None)}
    narrowed = request.config.getoption("keyword") or request.config.getoption("markexpr")
    if request.session.testsfailed or narrowed or not SDK_MODULES <= ran:
        pytest.skip("only meaningful when every SDK test ran and passed")
    for flavour, cls in CLASSES.items():
        assert public_methods(cls) - USED[flavour] == set(), flavour
