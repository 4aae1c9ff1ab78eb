"""The docs test's counts in the run's summary: `make test` captures what a passing test prints, and
how many blocks ran is the figure a reader checks (a document whose blocks all became `skip` still
passes)."""

from __future__ import annotations

import pytest

COUNTS = pytest.StashKey[list[str]]()


@pytest.fixture
def report_count(request: pytest.FixtureRequest):
    """Call with one line per document: it is printed at the end of the run, passed or not."""
    return request.config.stash.setdefault(COUNTS, []).append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(COUNTS, [])
    if lines:
        terminalreporter.write_sep("-", "documented commands")
        for line in lines:
            terminalreporter.write_line(line)
