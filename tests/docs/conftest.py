"""The docs test's counts in the run's summary: `make test` captures what a passing test prints, and
how many blocks ran is the figure a reader checks (a document whose blocks all became `skip` still
passes). tests/conftest.py prints them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.helpers import DOCUMENTED


@pytest.fixture
def report_count(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with one line per document: it is printed at the end of the run, passed or not. It travels in
    the test's report (user_properties), so it reaches the summary from a pytest-xdist worker too."""

    def report(line: str) -> None:
        request.node.user_properties.append((DOCUMENTED, line))

    return report
