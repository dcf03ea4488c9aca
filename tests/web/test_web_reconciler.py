"""The reconciler drives a real node from the database (SQLite and PostgreSQL).

Objects are changed through the service layer, as the API changes them;
the node opens real loopback sockets, so a refused socket is a real one.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from sbc.cdr import CallRecord
from sbc.io.settings import TransportSettings
from sbc.node import Node, NodeSettings
from web.app import AdminState
from web.db import ConfigObject, make_engine, make_sessions
from web.reconciler import Reconciler
from web.services import config

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(60)


class Records:
    def write(self, record: CallRecord) -> None:
        del record


def listener(name: str, port: int = 0) -> dict[str, Any]:
    return {"name": name, "transport": "udp", "address": HOST, "port": port}


def trunk(name: str, max_calls: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "carrier",
        "listeners": ["lo"],
        "targets": [{"host": HOST, "port": 5999}],
        "limits": {"max_calls": max_calls},
    }


def create(state: AdminState, kind: str, data: dict[str, Any]) -> None:
    with state.sessions.begin() as session:
        config.create_object(
            session, state.box, actor="test", kind=kind, data=data, now=_now()
        )


def update(state: AdminState, kind: str, name: str, data: dict[str, Any]) -> None:
    with state.sessions.begin() as session:
        config.update_object(
            session, state.box, actor="test", kind=kind, name=name, data=data,
            now=_now(),
        )  # fmt: skip


def rows(state: AdminState) -> dict[str, tuple[str, int, int, str]]:
    """name -> (state, desired_revision, applied_revision, reason)."""
    with state.sessions.begin() as session:
        found = session.scalars(select(ConfigObject))
        return {
            row.name: (
                row.state,
                row.desired_revision,
                row.applied_revision,
                row.reason,
            )
            for row in found
        }


def _now() -> datetime:
    return datetime.now(UTC)


def new_node() -> Node:
    return Node(NodeSettings(TransportSettings(listen=())), Records())


def test_reconciler_applies_changes_and_records_each_outcome(state):
    create(state, "listener", listener("lo"))
    create(state, "trunk", trunk("carrier"))
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind((HOST, 0))
    busy_port = taken.getsockname()[1]

    async def scenario():
        node = new_node()
        await node.start()
        reconciler = Reconciler(node, state.sessions, state.box, interval=60)
        first = await reconciler.reconcile()
        after_first = rows(state)
        idle = await reconciler.reconcile()

        await asyncio.to_thread(update, state, "trunk", "carrier", trunk("carrier", 5))
        await asyncio.to_thread(create, state, "listener", listener("busy", busy_port))
        pending = rows(state)
        refused = await reconciler.reconcile()
        after_refused = rows(state)
        trunk_limits = node.config.trunk("carrier").limits.max_calls

        taken.close()
        retried = await reconciler.reconcile()
        after_retry = rows(state)
        listening = [spec.port for spec in node.endpoint.listening]
        await node.stop()
        return (
            first, after_first, idle, pending, refused, after_refused,
            trunk_limits, retried, after_retry, listening,
        )  # fmt: skip

    (
        first, after_first, idle, pending, refused, after_refused,
        trunk_limits, retried, after_retry, listening,
    ) = asyncio.run(scenario())  # fmt: skip

    assert first == 2
    assert after_first == {
        "lo": ("applied", 1, 1, ""),
        "carrier": ("applied", 1, 1, ""),
    }
    assert idle == 0  # nothing changed: nothing written
    assert pending["carrier"] == ("pending", 2, 1, "")
    assert refused == 2
    busy_state, _, busy_applied, busy_reason = after_refused["busy"]
    assert (busy_state, busy_applied) == ("failed", 0)
    assert "cannot listen" in busy_reason
    assert after_refused["carrier"] == (
        "failed", 2, 1, "not applied: listener 'busy' failed",
    )  # fmt: skip
    assert after_refused["lo"] == ("applied", 1, 1, "")
    assert trunk_limits is None  # the refused round changed nothing
    assert retried == 2
    assert after_retry == {
        "lo": ("applied", 1, 1, ""),
        "carrier": ("applied", 2, 2, ""),
        "busy": ("applied", 1, 1, ""),
    }
    assert busy_port in listening


def test_committed_change_wakes_the_reconciler_before_its_poll(state):
    create(state, "listener", listener("lo"))

    async def scenario():
        node = new_node()
        await node.start()
        reconciler = Reconciler(node, state.sessions, state.box, interval=600)
        reconciler.watch()
        task = asyncio.create_task(reconciler.run())
        try:
            await _until(lambda: rows(state)["lo"][0] == "applied")
            await asyncio.to_thread(create, state, "trunk", trunk("carrier"))
            await _until(lambda: rows(state).get("carrier", ("",))[0] == "applied")
            names = [view.name for view in node.trunks()]
        finally:
            task.cancel()
            reconciler.unwatch()
            await node.stop()
        return names, reconciler.rounds

    names, rounds = asyncio.run(scenario())

    assert names == ["carrier"]
    assert rounds == 2  # the first round, then the one the commit asked for


def test_outcome_of_an_older_revision_leaves_a_newer_change_pending(state):
    create(state, "listener", listener("lo"))
    with state.sessions.begin() as session:
        [stored] = config.node_objects(session, state.box, "")
    update(state, "listener", "lo", listener("lo"))
    update(state, "listener", "lo", listener("lo", 1))

    with state.sessions.begin() as session:
        written = config.record_outcome(
            session, stored.id, revision=stored.desired_revision, applied=True,
            reason="",
        )  # fmt: skip

    assert not written
    assert rows(state)["lo"] == ("pending", 3, 0, "")


def test_node_local_objects_replace_shared_ones_for_their_node_only(state):
    create(state, "listener", listener("lo", 0))
    with state.sessions.begin() as session:
        local = ConfigObject(
            kind="listener", name="lo", node="node-b", updated_at=_now(),
            document=listener("lo", 1), revision=1, desired_revision=1,
        )  # fmt: skip
        session.add(local)

    with state.sessions.begin() as session:
        shared = config.node_objects(session, state.box, "node-a")
        own = config.node_objects(session, state.box, "node-b")

    assert [(o.node, o.item.port) for o in shared] == [("", 0)]
    assert [(o.node, o.item.port) for o in own] == [("node-b", 1)]


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_poll_picks_up_a_change_made_by_another_process(state, database_url):
    create(state, "listener", listener("lo"))
    # Another process: its own engine and sessions on the same database.
    other_engine = make_engine(database_url)
    elsewhere = AdminState(make_sessions(other_engine), state.box)

    async def scenario():
        node = new_node()
        await node.start()
        reconciler = Reconciler(node, state.sessions, state.box, interval=0.2)
        reconciler.watch()  # hears this process's commits only
        task = asyncio.create_task(reconciler.run())
        try:
            await _until(lambda: rows(state)["lo"][0] == "applied")
            await asyncio.to_thread(create, elsewhere, "trunk", trunk("carrier"))
            await _until(lambda: rows(state).get("carrier", ("",))[0] == "applied")
        finally:
            task.cancel()
            reconciler.unwatch()
            await node.stop()
        return [view.name for view in node.trunks()]

    names = asyncio.run(scenario())
    other_engine.dispose()

    assert names == ["carrier"]
