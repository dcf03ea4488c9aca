"""The media relay with its sans-IO core compiled by mypyc, for the benchmarks.

mypyc (it ships with mypy) writes extension modules beside the sources it
compiles, and Python prefers them to the sources. Built in the shared
working tree they would shadow every later edit, so the benchmarks build a
copy: ``sbc/`` and ``ipsec/`` copied to a scratch directory, the modules of
the per-packet path compiled there, and that directory put first on
PYTHONPATH for the relay under test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

COMPILED_MODULES = (
    "sbc/media/core.py",
    "sbc/media/counters.py",
    "sbc/media/rtp.py",
    "sbc/media/relay.py",
)
"""The per-packet path: the core, its counters and header helpers, and the
port that calls it. One group, so the classes reach each other's fields
directly."""


def build_compiled(root: Path, scratch: Path) -> Path:
    """A copy of ``root``'s packages in ``scratch`` with the core compiled."""
    for package in ("sbc", "ipsec"):
        shutil.copytree(
            root / package,
            scratch / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.so"),
        )
    mypyc = Path(sys.executable).parent / "mypyc"
    result = subprocess.run(
        [str(mypyc), *COMPILED_MODULES], cwd=scratch, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"mypyc failed:\n{result.stdout}\n{result.stderr}")
    return scratch
