"""The python-fido2 device suite's counts, printed in the terminal summary (CI's output)."""

from __future__ import annotations

import pytest

_LINES: list[str] = []


@pytest.fixture
def suite_report() -> list[str]:
    """Lines a test wants printed in the terminal summary."""
    return _LINES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LINES:
        terminalreporter.section("python-fido2 tests/device against vfido")
        for line in _LINES:
            terminalreporter.write_line(line)
