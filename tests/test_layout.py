"""The test tree itself: pytest imports test modules by basename."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_module_basenames_are_unique_outside_packages():
    # Folders without __init__.py put their modules on sys.path by basename,
    # so two test_x.py files in such folders collide at collection.
    names = Counter(
        path.name
        for path in TESTS.rglob("test_*.py")
        if not (path.parent / "__init__.py").exists()
    )

    assert [name for name, count in names.items() if count > 1] == []
