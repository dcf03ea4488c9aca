"""Operator actions on a connection: rekey on request and unload."""

from __future__ import annotations

import pytest

from ipsec.ike.connection import StartAction
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    IkeSaDown,
    IkeSaRekeyed,
)

from .test_daemon import (
    A_ID,
    B_ID,
    Node,
    connection,
    echo_round_trip,
    pair,
    run,
    until,
)


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


def test_peers_sharing_one_identity_do_not_share_a_lineage():
    # One responder connection (no remote address) for many initiators
    # that present the same identity: each one's CHILD_SA stands alone, so
    # the inbound check of one never admits what another's policy allows.
    async def scenario():
        b = Node("127.0.0.2")
        first, second = Node("127.0.0.1"), Node("127.0.0.3")
        try:
            b.daemon.load(
                connection(
                    "any", "127.0.0.2", None, B_ID, A_ID,
                    local_net="10.2.0.0/24", remote_net="10.0.0.0/8",
                )
            )  # fmt: skip
            for node, net in ((first, "10.1.0.0/24"), (second, "10.3.0.0/24")):
                node.daemon.load(
                    connection(
                        "to-b", node.daemon.address.compressed, "127.0.0.2",
                        A_ID, B_ID, local_net=net, remote_net="10.2.0.0/24",
                        remote_port=b.daemon.ike_port,
                        remote_nat_t_port=b.daemon.nat_t_port,
                        start_action=StartAction.START, encap=True,
                        send_initial_contact=False,
                    )
                )  # fmt: skip
                await until(lambda node=node: node.of(ChildSaInstalled))
            await until(lambda: len(b.of(ChildSaInstalled)) == 2)

            one, two = b.of(ChildSaInstalled)
            assert one.rekeyed_spi is None and two.rekeyed_spi is None
            lineages = {
                b.dataplane._inbound[event.inbound_spi].lineage for event in (one, two)
            }
            assert lineages == {one.inbound_spi, two.inbound_spi}
        finally:
            for node in (first, second, b):
                node.close()

    run(scenario())
