"""Run ``sbc serve`` with tracemalloc to see what a held call's memory is.

``python -m bench.b2bua_tracemalloc OUT.txt serve --config ...`` runs the
same entry point as the ``sbc`` command. On SIGUSR2 it writes to OUT.txt the
allocations still alive, grouped by source line, largest first, compared
with the first SIGUSR2 (so: signal once after start, once after the calls).
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from sbc.cli import main

FRAMES = 4
TOP = 40


def install(report: Path) -> None:
    """Start tracing; each SIGUSR2 appends a report to ``report``."""
    tracemalloc.start(FRAMES)
    baseline: list[tracemalloc.Snapshot] = []

    def dump(_signum: int, _frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot()
        if not baseline:
            baseline.append(snapshot)
            return
        stats = snapshot.compare_to(baseline[0], "traceback")
        with report.open("a", encoding="utf-8") as out:
            total = sum(stat.size_diff for stat in stats)
            out.write(f"== growth since the first snapshot: {total / 2**20:.1f} MiB\n")
            for stat in stats[:TOP]:
                out.write(f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:8d}\n")
                for line in stat.traceback.format(limit=FRAMES):
                    out.write(f"    {line}\n")

    signal.signal(signal.SIGUSR2, dump)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
