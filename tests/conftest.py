"""Shared test switches: with SBC_STRICT=1 (as CI runs) every skip is a
failure, so a green CI run means every interop test really ran
(tests/peer_tools.py has the checks that skip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peer_tools import STRICT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        report.longrepr = f"skipped under SBC_STRICT=1: {reason}"
