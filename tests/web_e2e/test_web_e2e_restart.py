"""kill -9 of a node, then a restart: nothing committed is lost, tunnels return.

Two nodes built through their APIs (both on SQLite, then both on
PostgreSQL). Node A is killed with SIGKILL while three calls cross it,
node B while a client is creating dial plans one after another. After each
restart, from the same data directory and database and without a
``--config`` file: every object as it was committed (revision and
document), every finished call's record and every audit entry as before,
each acknowledged write there, at most the one in flight besides (and
then with its audit entry: a change and its entry commit together), the
SAs up again on both nodes and a new call through both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_lab import (
    ApiNode,
    NodeDatabases,
    TwoNodeLab,
    dial_plan,
    one_child_up,
    poll,
    spis,
)

pytestmark = [pytest.mark.timeout(400), pytest.mark.peer("sipp"), pytest.mark.root]
FINISHED_CALLS = 3
CALLS_AT_KILL = 3
WRITES_BEFORE_KILL = 8
TUNNEL_BACK = 60.0
"""Node B's return is noticed by DPD (about 4 s) and the retry schedule
(1, 2, 5, 10 s ...) then sets the SAs up; a loaded machine adds to both."""


@pytest.fixture
def node_database(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    with NodeDatabases(tmp_path) as make:
        yield make


def committed(node: ApiNode) -> list[tuple[Any, ...]]:
    """What was committed of each object: identity, revision, document."""
    return sorted(
        (o["kind"], o["name"], o["node"], o["revision"], o["desired_revision"],
         repr(o["document"]))
        for o in node.objects()
    )  # fmt: skip


class Writer(threading.Thread):
    """Creates dial plans one after another until the node stops answering;
    keeps the names of those acknowledged with 201."""

    def __init__(self, node: ApiNode) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.acknowledged: list[str] = []
        self.refused: list[int] = []

    def run(self) -> None:
        for number in range(1, 1000):
            name = f"plan-{number:03}"
            try:
                answer = self.node.api.post(
                    "/dial-plans", json=dial_plan(name, "carrier")
                )
            except httpx.HTTPError:
                return
            if answer.status_code != 201:
                self.refused.append(answer.status_code)
                return
            self.acknowledged.append(name)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_during_calls_and_writes_loses_nothing_committed(
    tmp_path: Path, node_database, backend: str
) -> None:
    databases = node_database(backend), node_database(backend)
    with TwoNodeLab(tmp_path, *databases) as lab:
        node_a, node_b = lab.node_a, lab.node_b
        node_a.wait_applied()
        node_b.wait_applied()
        node_a.wait_sas(one_child_up, 30, "SAs up")
        lab.calls_pass("finished", calls=FINISHED_CALLS)
        records = poll(
            lambda: r if len(r := node_a.cdrs()) == FINISHED_CALLS else None,
            15, "records of the finished calls",
        )  # fmt: skip
        config_before, audit_before = committed(node_a), node_a.audit()

        # kill -9 of node A with calls up.
        in_progress = lab.call("in-progress", calls=CALLS_AT_KILL, hold_ms=60_000)
        poll(lambda: _answered(node_a, CALLS_AT_KILL), 30, "calls up on node A")
        node_a.kill()
        in_progress.stop()
        node_a.start()
        applied_a = node_a.wait_applied()
        config_after, records_after = committed(node_a), node_a.cdrs()
        audit_after = node_a.audit()
        back_a = node_a.wait_sas(one_child_up, TUNNEL_BACK, "SAs back after kill")
        back_b = node_b.wait_sas(one_child_up, TUNNEL_BACK, "stale IKE_SA replaced")
        lab.calls_pass("after-kill-during-calls")

        # kill -9 of node B in the middle of a sequence of API writes.
        writer = Writer(node_b)
        writer.start()
        poll(lambda: len(writer.acknowledged) >= WRITES_BEFORE_KILL or None, 60,
             "writes acknowledged")  # fmt: skip
        node_b.kill()
        writer.join(30)
        node_b.start()
        node_b.wait_applied()
        plans = {p["name"] for p in node_b.get("/dial-plans")} - {"to-carrier"}
        created = [
            entry["name"] for entry in node_b.audit()
            if (entry["action"], entry["kind"]) == ("create", "dial_plan")
            and entry["name"].startswith("plan-")
        ]  # fmt: skip
        node_a.wait_sas(one_child_up, TUNNEL_BACK, "SAs back after B's kill")
        node_b.wait_sas(one_child_up, TUNNEL_BACK, "SAs back after B's kill")
        lab.calls_pass("after-kill-during-writes")
        total = poll(
            lambda: r if len(r := node_a.cdrs()) == FINISHED_CALLS + 2 else None,
            15, "records of the calls after the restarts",
        )  # fmt: skip

    assert config_after == config_before
    assert all(o["state"] == "applied" for o in applied_a)
    assert _keys(records_after) == _keys(records)  # the calls cut left none
    assert records_after == records
    assert audit_after[len(audit_after) - len(audit_before) :] == audit_before
    assert [(e["action"], e["actor"]) for e in audit_after[:1]] == [("login", "admin")]
    assert spis(back_a) == spis(back_b)
    assert writer.refused == [] and not writer.is_alive()
    acknowledged = set(writer.acknowledged)
    assert acknowledged <= plans and len(plans - acknowledged) <= 1
    assert sorted(created) == sorted(plans)
    assert total[-FINISHED_CALLS:] == records


def _answered(node: ApiNode, count: int) -> bool | None:
    calls = node.get("/runtime/calls")
    return len(calls) == count and all(c["state"] == "Answered" for c in calls) or None


def _keys(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["call_id"], r["start_time"], r["end_time"]) for r in records]
