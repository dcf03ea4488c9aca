"""The transition tables in docs/sip-transactions.md are the code's tables."""

from __future__ import annotations

from pathlib import Path

from sbc.sip.timers import Timer
from sbc.sip.transaction import TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "sip-transactions.md"


def documented_rows() -> dict[str, set[tuple[str, ...]]]:
    tables: dict[str, set[tuple[str, ...]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("#### "):
            current = tables.setdefault(line[5:].strip(), set())
        elif current is not None and line.startswith("| ") and "---" not in line:
            cells = tuple(cell.strip() for cell in line.strip("|").split("|"))
            if cells[0] != "state":
                current.add(cells)
        elif line.startswith("## "):
            current = None
    return tables


def coded_rows() -> dict[str, set[tuple[str, ...]]]:
    tables = {}
    for kind, table in TRANSITIONS.items():
        rows = set()
        for (state, stimulus), transition in table.items():
            cause = (
                f"Timer {stimulus.value}"
                if isinstance(stimulus, Timer)
                else stimulus.value
            )
            actions = ", ".join(action.value for action in transition.actions) or "-"
            rows.add((state.value, cause, transition.next_state.value, actions))
        tables[kind.value] = rows
    return tables


def test_docs_transition_tables_match_code():
    assert documented_rows() == coded_rows()
