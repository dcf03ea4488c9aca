"""Connection lifecycle with streams and against charon: reauthentication
make-before-break, start_action trap and close_action.

Reauthentication (RFC 7296 §2.8.3) builds a second IKE_SA with a full
IKE_SA_INIT and IKE_AUTH and moves the traffic to its CHILD_SA before the
old IKE_SA is deleted, so a continuous stream loses nothing: first between
two of our daemons (either one reauthenticating), then with charon as the
peer while our side reauthenticates (charon's own reauthentication is
break-before-make by default, so only ours is held to zero loss).

Against charon (namespaces, kernel-libipsec, ESP in UDP): a ping from our
namespace into our TUN hits the trap and brings the tunnel up; charon
deleting the CHILD_SA or the IKE_SA (swanctl --terminate) makes our
close_action set it up again at once or re-arm the trap.
"""

import asyncio
import json
import re
import sys
from dataclasses import replace

import pytest
from ike.test_daemon import A_INNER, B_INNER, Node, run, until
from ike.test_daemon_lifecycle import load
from test_charon import (
    CHARON_INNER,
    ECHO_ADDRESS,
    ECHO_PORT,
    SUITES,
    TUN_ADDRESS,
    UDP_PROBE,
    OurNode,
    charon_connection,
    charon_lab,  # noqa: F401 (the fixture, used by name)
    inside,
    our_connection,
)
from test_charon import run as run_in_lab
from test_charon import until as until_in_lab
from test_charon_rekey_stream import (
    CHARON_STREAM,
    PADDING,
    SEQUENCE,
    SOURCE_PORT,
    STREAM_PORT,
    STREAM_SECONDS,
    Stream,
    echo_and_record,
)

from ipsec.dataplane import PathDrop
from ipsec.ike.connection import CloseAction, StartAction
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    CloseActionTaken,
    IkeSaDown,
    IkeSaReauthenticated,
    IkeSaUp,
    TrapInstalled,
    TrapTriggered,
)

# -- two daemons: a stream across reauthentications ---------------------------


@pytest.mark.parametrize("side", ["a", "b"])
def test_reauthentication_mid_stream_loses_nothing_both_directions(side):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        reauther = a if side == "a" else b
        try:
            load(a, b, **{f"{side}_changes": {"reauth_time": 1.0}})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [first_child] = a.of(ChildSaInstalled)
            [first_ike] = a.of(IkeSaUp)
            stream = Stream(a, b)

            def send_in_overlap(event):
                # Both IKE_SAs and both CHILD_SAs are alive at this moment:
                # the datagram and its echo must cross the switch.
                if isinstance(event, IkeSaReauthenticated):
                    payload = SEQUENCE.pack(stream.sent) + PADDING
                    drop = a.dataplane.send(
                        A_INNER, B_INNER, 17, SOURCE_PORT, STREAM_PORT, payload
                    )
                    stream.send_drops += drop is not None
                    stream.sent += 1

            reauther.daemon.subscribe(send_in_overlap)

            def done():
                return reauther.of(IkeSaReauthenticated) and all(
                    n.of(IkeSaDown) for n in (a, b)
                )

            await stream.run_until(done)
            await stream.drain()

            to_b, to_a = stream.lost()
            assert stream.sent > 500
            assert stream.send_drops == 0
            assert (to_b, to_a) == ([], [])
            old = (first_ike.spi_i, first_ike.spi_r)
            for node in (a, b):
                live = {(s.engine.spi_i, s.engine.spi_r) for s in node.daemon.ike_sas()}
                assert old not in live
            assert first_child.inbound_spi not in a.dataplane.stats()["inbound"]
            assert first_child.outbound_spi not in b.dataplane.stats()["inbound"]
        finally:
            a.close()
            b.close()

    run(scenario())


# -- against charon --------------------------------------------------------------

SUITE = SUITES[0].values[0]


def received_pings(output):
    match = re.search(r"(\d+) received", output)
    return int(match.group(1)) if match else 0


async def ping_from_us(lab, count=6):
    """Ping charon's inner address from ours: through our TUN and its trap."""
    ping = await asyncio.to_thread(
        lab.a.exec, "ping", "-c", str(count), "-i", "0.3", "-W", "2",
        "-I", TUN_ADDRESS, CHARON_INNER, check=False,
    )  # fmt: skip
    return ping.stdout


async def udp_probe_from_charon(lab):
    probe = await asyncio.to_thread(
        lab.b.exec, sys.executable, "-c", UDP_PROBE, check=False
    )
    return probe.stdout


@pytest.mark.peer("charon")
@pytest.mark.root
def test_trap_brings_the_tunnel_to_charon_up_on_the_first_packet(charon_lab):  # noqa: F811
    lab, charon = charon_lab
    charon.load(charon_connection(SUITE))

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(SUITE, StartAction.TRAP))
            await until_in_lab(lambda: node.of(TrapInstalled), 5, "the trap")
            assert not node.daemon.ike_sas()

            output = await ping_from_us(lab)
            listing = await asyncio.to_thread(charon.list_sas)

            [triggered] = node.of(TrapTriggered)
            [child] = node.of(ChildSaInstalled)
            assert triggered.new_ike_sa and triggered.protocol == 1  # ICMP
            assert received_pings(output) >= 3, output + charon.tail()
            assert len(node.of(IkeSaUp)) == 1
            tun_drops = node.dataplane.stats()["paths"]["tun"]["drops"]
            assert tun_drops.get(PathDrop.TRAPPED.value, 0) >= 1
            assert f"in  {child.outbound_spi:08x}" in listing, listing
        finally:
            node.close()

    with inside(lab):
        run_in_lab(scenario())


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize(
    ("what", "action"),
    [
        ("child", CloseAction.START),
        ("ike", CloseAction.START),
        ("ike", CloseAction.TRAP),
    ],
)
def test_close_action_after_charon_terminates(charon_lab, what, action):  # noqa: F811
    lab, charon = charon_lab
    charon.load(charon_connection(SUITE))

    async def scenario():
        node = await OurNode.start()
        try:
            connection = our_connection(SUITE, StartAction.START)
            node.daemon.load(replace(connection, close_action=action))
            await until_in_lab(lambda: node.of(ChildSaInstalled), 15, "CHILD_SA")

            target = ("--child", "sip") if what == "child" else ("--ike", "sbc")
            outcome = await asyncio.to_thread(
                charon.swanctl, "--terminate", *target, "--timeout", "10",
                check=False,
            )  # fmt: skip
            assert "terminate completed successfully" in outcome.stdout, outcome
            await until_in_lab(lambda: node.of(CloseActionTaken), 10, "close_action")
            if action is CloseAction.TRAP:
                assert node.of(TrapInstalled) and not node.daemon.ike_sas()
                output = await ping_from_us(lab)
                assert received_pings(output) >= 3, output + charon.tail()
            await until_in_lab(
                lambda: len(node.of(ChildSaInstalled)) == 2, 15, "the CHILD_SA again"
            )
            probe = await udp_probe_from_charon(lab)

            [taken] = node.of(CloseActionTaken)
            assert taken.action is action
            assert taken.ike_sa_deleted is (what == "ike")
            assert node.of(ChildSaRemoved)[0].reason == (
                "deleted by the peer" if what == "child" else "its IKE_SA was deleted"
            )
            assert len(node.of(IkeSaUp)) == (1 if what == "child" else 2)
            assert probe.startswith(f"{ECHO_ADDRESS} {ECHO_PORT} OPTIONS"), probe
        finally:
            node.close()

    with inside(lab):
        run_in_lab(scenario())


REAUTH_AFTER = 3.0


@pytest.mark.peer("charon")
@pytest.mark.root
def test_our_reauthentication_mid_stream_with_charon_loses_nothing(charon_lab):  # noqa: F811
    lab, charon = charon_lab
    charon.load(charon_connection(SUITE))

    async def scenario():
        node = await OurNode.start()
        at_us = echo_and_record(node)
        try:
            connection = our_connection(SUITE, StartAction.START)
            node.daemon.load(replace(connection, reauth_time=REAUTH_AFTER))
            await until_in_lab(lambda: node.of(ChildSaInstalled), 10, "CHILD_SA")
            [first] = node.of(IkeSaUp)
            stream = await asyncio.to_thread(
                lab.b.exec, sys.executable, "-c", CHARON_STREAM,
                ECHO_ADDRESS, str(ECHO_PORT), CHARON_INNER, str(STREAM_SECONDS),
                check=False,
            )  # fmt: skip
            report = json.loads(stream.stdout)
            listing = await asyncio.to_thread(charon.list_sas)

            expected = set(range(report["sent"]))
            # Every REAUTH_AFTER seconds: at least once during the stream.
            done = node.of(IkeSaReauthenticated)
            downs = node.of(IkeSaDown)
            assert report["sent"] > 1000
            assert (done[0].spi_i, done[0].spi_r) == (first.spi_i, first.spi_r)
            assert downs and {d.reason for d in downs} == {"reauthenticated"}
            assert sorted(expected - at_us) == []
            assert sorted(expected - set(report["echoed"])) == []
            assert first.spi_i.hex() not in listing, listing
            assert done[-1].new_spi_i.hex() in listing, listing
        finally:
            node.close()

    with inside(lab):
        run_in_lab(scenario())
