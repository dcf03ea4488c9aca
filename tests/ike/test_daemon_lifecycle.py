"""Connection lifecycle between two daemons on loopback: start_action trap,
close_action, reauthentication; and the TRAP policy in the SPD and data plane.

A is the initiator and B the responder, each with its own data plane; the
CHILD_SA is judged by UDP echoed through the in-process channel, so the ESP
engine checks every SA and policy end to end.
"""

import asyncio
from ipaddress import ip_address

import pytest

from ipsec.dataplane import Acquire, DataPlane, PathDrop
from ipsec.esp.spd import (
    Direction,
    PolicyAction,
    SecurityPolicyDatabase,
    TrafficSelector,
)
from ipsec.ike.connection import CloseAction, StartAction
from ipsec.ike.constants import NotifyType
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    CloseActionTaken,
    IkeSaDown,
    IkeSaReauthenticated,
    IkeSaReauthFailed,
    IkeSaRekeyed,
    IkeSaUp,
    TrapInstalled,
    TrapRemoved,
    TrapTriggered,
)
from ipsec.ike.keymat import PresharedKey

from .test_daemon import (
    A_ID,
    A_INNER,
    B_ID,
    B_INNER,
    ECHO_PORT,
    Node,
    connection,
    echo_round_trip,
    run,
    until,
)

A_NET, B_NET = "10.1.0.0/24", "10.2.0.0/24"
SOURCE_PORT = 40000


def load(a, b, *, a_changes=None, b_changes=None):
    """B answers A; A's start_action and close_action come from a_changes.

    Both know the other's ports, so either can initiate (B reauthenticates
    or applies its close_action towards A).
    """
    b.daemon.load(
        connection(
            "to-a", "127.0.0.2", "127.0.0.1", B_ID, A_ID,
            local_net=B_NET, remote_net=A_NET,
            remote_port=a.daemon.ike_port, remote_nat_t_port=a.daemon.nat_t_port,
            **(b_changes or {}),
        )
    )  # fmt: skip
    a_changes = {"start_action": StartAction.START, "encap": True, **(a_changes or {})}
    a.daemon.load(
        connection(
            "to-b", "127.0.0.1", "127.0.0.2", A_ID, B_ID,
            local_net=A_NET, remote_net=B_NET,
            remote_port=b.daemon.ike_port, remote_nat_t_port=b.daemon.nat_t_port,
            **a_changes,
        )
    )  # fmt: skip


def bind_echo(a, b):
    """B echoes to A through the tunnel; returns the list A's echoes land in."""
    received = []

    def echo(data, source):
        b.dataplane.send(B_INNER, source[0], 17, ECHO_PORT, source[1], data)

    b.dataplane.bind(B_INNER, ECHO_PORT, echo)
    a.dataplane.bind(A_INNER, SOURCE_PORT, lambda data, _: received.append(data))
    return received


def send(a, payload=b"INVITE sip:trunk SIP/2.0"):
    return a.dataplane.send(A_INNER, B_INNER, 17, SOURCE_PORT, ECHO_PORT, payload)


async def settle(seconds=0.3):
    """Give the peers time to do what they should not (nothing must happen)."""
    await asyncio.sleep(seconds)


async def established(a, b, count=1):
    await until(
        lambda: (
            len(a.of(ChildSaInstalled)) >= count
            and len(b.of(ChildSaInstalled)) >= count
        )
    )


def live_children(node):
    return [c for sa in node.daemon.ike_sas() for c in sa.children]


# -- the TRAP policy in the SPD and the data plane ---------------------------

LOCAL = TrafficSelector.from_network(A_NET)
REMOTE = TrafficSelector.from_network(B_NET)


def test_trap_ranks_below_protect_wherever_it_sits():
    spd = SecurityPolicyDatabase()
    trap = spd.add(LOCAL, REMOTE, PolicyAction.TRAP)
    source, destination = ip_address(A_INNER), ip_address(B_INNER)

    assert spd.lookup(source, destination, 17, 1, 2) is trap
    protect = spd.add(LOCAL, REMOTE, PolicyAction.PROTECT, spi=0x1234)
    assert spd.lookup(source, destination, 17, 1, 2) is protect
    spd.remove(protect)
    assert spd.lookup(source, destination, 17, 1, 2) is trap
    # Outside the trap's selectors the default (DISCARD) applies as before.
    assert spd.lookup(source, ip_address("10.3.0.1"), 17, 1, 2).action is (
        PolicyAction.DISCARD
    )


def test_trap_is_outbound_only_and_names_no_spi():
    spd = SecurityPolicyDatabase()
    with pytest.raises(ValueError, match="outbound only"):
        spd.add(LOCAL, REMOTE, PolicyAction.TRAP, direction=Direction.INBOUND)
    with pytest.raises(ValueError, match="name an SPI"):
        spd.add(LOCAL, REMOTE, PolicyAction.TRAP, spi=0x1234)


def test_trapped_packets_raise_an_acquire_each_and_are_counted_as_dropped():
    async def scenario():
        dataplane = DataPlane(asyncio.get_running_loop())
        acquires: list[Acquire] = []
        try:
            trap = dataplane.add_policy(LOCAL, REMOTE, action=PolicyAction.TRAP)
            assert send_from(dataplane) is PathDrop.TRAPPED  # no handler yet
            dataplane.set_acquire_handler(acquires.append)

            drops = [send_from(dataplane) for _ in range(3)]

            assert drops == [PathDrop.TRAPPED] * 3
            assert dataplane.stats()["paths"]["channel"]["drops"] == {"trapped": 4}
            assert [a.policy for a in acquires] == [trap] * 3
            first = acquires[0]
            assert (first.source, first.destination) == (
                ip_address(A_INNER),
                ip_address(B_INNER),
            )
            assert (first.protocol, first.source_port, first.destination_port) == (
                17,
                SOURCE_PORT,
                ECHO_PORT,
            )
            dataplane.del_policy(trap)
            assert send_from(dataplane) is PathDrop.NO_POLICY
            assert len(acquires) == 3
        finally:
            dataplane.close()

    run(scenario())


def send_from(dataplane):
    return dataplane.send(A_INNER, B_INNER, 17, SOURCE_PORT, ECHO_PORT, b"x")


# -- start_action = trap -------------------------------------------------------


def test_trap_initiates_once_on_the_first_packet_then_traffic_flows():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"start_action": StartAction.TRAP})
            await settle(0.1)
            assert a.of(TrapInstalled) and not a.daemon.ike_sas()

            # A burst: every packet is trapped until the CHILD_SA is up.
            drops = [send(a) for _ in range(20)]
            await established(a, b)
            echoed = await echo_round_trip(a, b, b"after the trap")

            [triggered] = a.of(TrapTriggered)
            assert drops == [PathDrop.TRAPPED] * 20
            assert triggered.new_ike_sa
            assert triggered.destination == ip_address(B_INNER)
            assert triggered.destination_port == ECHO_PORT
            assert len(a.of(IkeSaUp)) == len(b.of(IkeSaUp)) == 1
            assert echoed == [b"after the trap"]
            channel = a.dataplane.stats()["paths"]["channel"]
            assert channel["drops"]["trapped"] == 20
        finally:
            a.close()
            b.close()
        assert a.of(TrapRemoved)  # close takes the traps away

    run(scenario())


def test_trap_stays_when_the_child_sa_goes_and_the_next_packet_sets_it_up():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"start_action": StartAction.TRAP})
            bind_echo(a, b)
            send(a)
            await established(a, b)

            # The peer deletes the CHILD_SA only: the trap asks the same
            # IKE_SA for a new one.
            assert b.daemon.terminate_child("to-a") == 1
            await until(lambda: a.of(ChildSaRemoved))
            assert send(a) is PathDrop.TRAPPED
            await established(a, b, count=2)
            assert await echo_round_trip(a, b, b"second CHILD_SA")

            # We delete the IKE_SA: the trap initiates a new one.
            a.daemon.terminate("to-b")
            await until(lambda: a.of(IkeSaDown) and not a.daemon.ike_sas())
            assert send(a) is PathDrop.TRAPPED
            await established(a, b, count=3)
            assert await echo_round_trip(a, b, b"second IKE_SA")

            triggers = a.of(TrapTriggered)
            assert [t.new_ike_sa for t in triggers] == [True, False, True]
            assert len(a.of(IkeSaUp)) == 2
            assert not a.of(CloseActionTaken)
        finally:
            a.close()
            b.close()

    run(scenario())


def test_trap_waits_after_a_failed_setup_instead_of_asking_per_packet():
    async def scenario():
        a = Node("127.0.0.1", trap_retry_delay=60.0)
        b = Node("127.0.0.2")
        try:
            load(
                a, b,
                a_changes={"start_action": StartAction.TRAP},
                b_changes={"psk": PresharedKey(b"not the same secret")},
            )  # fmt: skip
            send(a)
            await until(lambda: a.of(IkeSaDown))

            for _ in range(10):
                assert send(a) is PathDrop.TRAPPED
                await asyncio.sleep(0.02)

            assert len(a.of(TrapTriggered)) == 1
            assert not a.daemon.ike_sas()
        finally:
            a.close()
            b.close()

    run(scenario())


# -- close_action ---------------------------------------------------------------


def peer_deletes(b, what):
    if what == "child":
        assert b.daemon.terminate_child("to-a") == 1
    else:
        assert b.daemon.terminate("to-a") == 1


@pytest.mark.parametrize("what", ["child", "ike"])
def test_close_action_none_leaves_it_closed(what):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b)
            await established(a, b)

            peer_deletes(b, what)
            await until(lambda: a.of(ChildSaRemoved))
            await settle()

            assert len(a.of(ChildSaInstalled)) == 1 and len(a.of(IkeSaUp)) == 1
            assert not a.of(CloseActionTaken) and not a.of(TrapInstalled)
            assert send(a) is PathDrop.NO_POLICY
        finally:
            a.close()
            b.close()

    run(scenario())


@pytest.mark.parametrize("what", ["child", "ike"])
def test_close_action_start_sets_it_up_again_at_once(what):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"close_action": CloseAction.START})
            await established(a, b)
            [first] = a.daemon.ike_sas()

            peer_deletes(b, what)
            await established(a, b, count=2)
            echoed = await echo_round_trip(a, b, b"again")

            [taken] = a.of(CloseActionTaken)
            [carrier] = a.daemon.ike_sas()
            assert taken.action is CloseAction.START
            assert taken.ike_sa_deleted is (what == "ike")
            assert (taken.spi_i, taken.spi_r) == (
                first.engine.spi_i,
                first.engine.spi_r,
            )
            # A CHILD_SA deleted alone comes back on the same IKE_SA.
            assert (carrier is first) is (what == "child")
            assert len(a.of(IkeSaUp)) == (1 if what == "child" else 2)
            assert echoed == [b"again"]
        finally:
            a.close()
            b.close()

    run(scenario())


@pytest.mark.parametrize("what", ["child", "ike"])
def test_close_action_trap_waits_for_the_next_packet(what):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"close_action": CloseAction.TRAP})
            await established(a, b)
            assert not a.of(TrapInstalled)

            peer_deletes(b, what)
            await until(lambda: a.of(TrapInstalled))
            await settle()
            assert len(a.of(ChildSaInstalled)) == 1  # nothing until a packet

            assert send(a) is PathDrop.TRAPPED
            await established(a, b, count=2)
            echoed = await echo_round_trip(a, b, b"trapped again")

            [taken] = a.of(CloseActionTaken)
            [triggered] = a.of(TrapTriggered)
            assert taken.action is CloseAction.TRAP
            assert triggered.new_ike_sa is (what == "ike")
            assert echoed == [b"trapped again"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_close_action_ignores_our_own_deletes():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"close_action": CloseAction.START})
            await established(a, b)

            a.daemon.terminate("to-b")
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))
            await settle()

            assert not a.of(CloseActionTaken) and not a.daemon.ike_sas()
        finally:
            a.close()
            b.close()

    run(scenario())


def test_connection_that_cannot_initiate_refuses_trap_close_action_and_reauth():
    for changes in (
        {"start_action": StartAction.TRAP},
        {"close_action": CloseAction.START},
        {"reauth_time": 60.0},
    ):
        with pytest.raises(ValueError, match="need a remote address"):
            connection(
                "any", "127.0.0.2", None, B_ID, A_ID,
                local_net=B_NET, remote_net=A_NET, **changes,
            )  # fmt: skip


# -- reauthentication -------------------------------------------------------------


def test_manual_reauthentication_replaces_both_sas_make_before_break():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            # B's close_action must not fire when A deletes the old IKE_SA.
            load(a, b, b_changes={"close_action": CloseAction.START})
            await established(a, b)
            [old] = a.daemon.ike_sas()
            [old_child] = a.of(ChildSaInstalled)
            old_spis = (old.engine.spi_i, old.engine.spi_r)

            assert a.daemon.reauthenticate("to-b") == 1
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))
            echoed = await echo_round_trip(a, b, b"reauthenticated")

            [done] = a.of(IkeSaReauthenticated)
            [new] = a.daemon.ike_sas()
            [a_down], [b_down] = a.of(IkeSaDown), b.of(IkeSaDown)
            [removed] = a.of(ChildSaRemoved)
            assert (done.spi_i, done.spi_r) == old_spis
            assert (done.new_spi_i, done.new_spi_r) == (
                new.engine.spi_i,
                new.engine.spi_r,
            )
            assert (a_down.spi_i, a_down.spi_r) == old_spis
            assert a_down.reason == "reauthenticated"
            # No INITIAL_CONTACT: B kept the old IKE_SA until A deleted it.
            assert b_down.reason == "deleted by the peer"
            assert removed.inbound_spi == old_child.inbound_spi
            assert removed.reason == "reauthenticated"
            for node in (a, b):
                assert len(node.daemon.ike_sas()) == 1
                assert len(live_children(node)) == 1
                assert len(node.dataplane.stats()["inbound"]) == 1
            assert old_child.inbound_spi not in a.dataplane.stats()["inbound"]
            assert old_child.outbound_spi not in b.dataplane.stats()["inbound"]
            assert len(a.of(IkeSaUp)) == len(b.of(IkeSaUp)) == 2
            assert not b.of(CloseActionTaken)
            assert echoed == [b"reauthenticated"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_reauth_time_reauthenticates_again_and_again():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"reauth_time": 0.3})
            await established(a, b)

            await until(lambda: len(a.of(IkeSaReauthenticated)) >= 2)
            await until(lambda: len(b.daemon.ike_sas()) == 1)
            echoed = await echo_round_trip(a, b, b"still there")

            first, second = a.of(IkeSaReauthenticated)[:2]
            assert (second.spi_i, second.spi_r) == (first.new_spi_i, first.new_spi_r)
            assert echoed == [b"still there"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_failed_reauthentication_keeps_the_old_ike_sa_and_retries():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"retransmit_timeout": 0.2})
            await established(a, b)
            [old] = a.daemon.ike_sas()
            # B now wants another PSK: the new IKE_AUTH fails, the old
            # IKE_SA (set up with the old definition) carries on.
            b.daemon.load(
                connection(
                    "to-a", "127.0.0.2", "127.0.0.1", B_ID, A_ID,
                    local_net=B_NET, remote_net=A_NET,
                    psk=PresharedKey(b"rotated on one side only"),
                )
            )  # fmt: skip

            assert a.daemon.reauthenticate("to-b") == 1
            await until(lambda: len(a.of(IkeSaReauthFailed)) >= 2, timeout=5)
            echoed = await echo_round_trip(a, b, b"old IKE_SA")

            failure = a.of(IkeSaReauthFailed)[0]
            assert (failure.spi_i, failure.spi_r) == (
                old.engine.spi_i,
                old.engine.spi_r,
            )
            assert failure.notify_type is NotifyType.AUTHENTICATION_FAILED
            assert old in a.daemon.ike_sas()
            assert old.replaced_by is None or old.replaced_by.reauth_of is old
            assert not a.of(IkeSaReauthenticated)
            assert echoed == [b"old IKE_SA"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_reauthentication_deadline_survives_ike_sa_rekeys():
    """Rekeyed every 0.2 s, the IKE_SA is still reauthenticated at 0.5 s:
    each rekeyed IKE_SA inherits the deadline instead of starting afresh."""

    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            load(a, b, a_changes={"ike_rekey_time": 0.2, "reauth_time": 0.5})
            await established(a, b)

            await until(lambda: a.of(IkeSaReauthenticated), timeout=5)
            first = a.of(IkeSaReauthenticated)[0]
            old = (first.spi_i, first.spi_r)
            await until(lambda: any((d.spi_i, d.spi_r) == old for d in b.of(IkeSaDown)))
            echoed = await echo_round_trip(a, b, b"rekeyed and reauthenticated")

            rekeyed_into = {(r.new_spi_i, r.new_spi_r) for r in a.of(IkeSaRekeyed)}
            [a_down] = [d for d in a.of(IkeSaDown) if (d.spi_i, d.spi_r) == old]
            assert old in rekeyed_into
            assert a_down.reason == "reauthenticated"
            assert echoed == [b"rekeyed and reauthenticated"]
        finally:
            a.close()
            b.close()

    run(scenario())
