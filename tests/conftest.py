"""Shared test switches.

Tests that need a real peer (SIPp, tshark, charon) or root call
``require_tool``/``require_root``. Outside strict mode a missing requirement
skips with the reason; with SBC_STRICT=1 (as CI runs) every skip is a failure,
so a green CI run means every interop test really ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

STRICT = os.environ.get("SBC_STRICT") == "1"


def require_tool(name: str, package: str) -> str:
    """Return the path of ``name`` or skip naming the Debian package to install."""
    path = shutil.which(name) or next(
        (
            p
            for p in (f"/usr/sbin/{name}", f"/usr/lib/ipsec/{name}")
            if os.path.exists(p)
        ),
        None,
    )
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package})")
    return path


def require_root(reason: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {reason}")


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
