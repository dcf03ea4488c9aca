"""Operator actions on a connection: rekey on request and unload."""

from __future__ import annotations

import pytest

from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    IkeSaDown,
    IkeSaRekeyed,
)

from .test_daemon import Node, echo_round_trip, pair, run, until


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_child_sa_rekey_on_request_replaces_the_pair(side):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            node, name = (a, "to-b") if side == "initiator" else (b, "to-a")
            [first] = node.of(ChildSaInstalled)

            assert node.daemon.rekey(name) == 1
            await until(lambda: len(a.of(ChildSaInstalled)) == 2)
            await until(lambda: len(b.of(ChildSaInstalled)) == 2)
            await until(lambda: a.of(ChildSaRemoved) and b.of(ChildSaRemoved))
            echoed = await echo_round_trip(a, b, b"after a requested rekey")

            [removed] = node.of(ChildSaRemoved)
            assert removed.inbound_spi == first.inbound_spi
            assert removed.reason == "rekeyed"
            assert echoed == [b"after a requested rekey"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_ike_sa_rekey_on_request_keeps_the_child_sa():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [old] = a.daemon.ike_sas()

            assert a.daemon.rekey("to-b", ike=True) == 1
            await until(lambda: a.of(IkeSaRekeyed) and b.of(IkeSaRekeyed))
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))
            echoed = await echo_round_trip(a, b, b"after a requested IKE rekey")

            [current] = a.daemon.ike_sas()
            assert current is not old and len(current.children) == 1
            assert not a.of(ChildSaRemoved) and not b.of(ChildSaRemoved)
            assert echoed == [b"after a requested IKE rekey"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_rekey_of_a_connection_without_sas_starts_nothing():
    async def scenario():
        a = Node("127.0.0.1")
        try:
            assert a.daemon.rekey("unknown") == 0
            assert a.daemon.rekey("unknown", ike=True) == 0
        finally:
            a.close()

    run(scenario())


def test_unload_deletes_the_sas_on_both_sides_and_forgets_the_connection():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            assert a.daemon.unload("to-b") == 1
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))

            assert "to-b" not in a.daemon.connections
            assert a.daemon.ike_sas() == [] and b.daemon.ike_sas() == []
            assert a.dataplane.stats()["inbound"] == {}
            assert b.dataplane.stats()["inbound"] == {}
            assert a.daemon.unload("to-b") == 0
        finally:
            a.close()
            b.close()

    run(scenario())
