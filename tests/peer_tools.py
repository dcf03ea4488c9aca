"""What a test needs from the machine: real peers and root.

Tests that need a real peer (SIPp, tshark, charon) or root call
``require_tool``/``require_root``. Outside strict mode a missing requirement
skips with the reason; with SBC_STRICT=1 (as CI runs) every skip is a failure
(tests/conftest.py), so a green CI run means every interop test really ran.

A module of its own rather than conftest.py: once pytest has imported a
conftest.py of a subdirectory, the name ``conftest`` means that one.
"""

from __future__ import annotations

import os
import shutil

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
