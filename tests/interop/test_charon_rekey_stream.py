"""Zero-loss rekeying: a continuous UDP stream through the tunnel while the
CHILD_SA or the IKE_SA is rekeyed, started by either side.

Two of our daemons on loopback, each with its own data plane. A sends
sequence-numbered datagrams at a fixed rate to an echo on B's inner
address through the in-process channel; B counts what reached it (A to B)
and echoes each one back, and A counts the echoes (B to A). The stream runs
before, during and after the rekey; every sequence number must arrive in
both directions. The old SA's packets still in flight when the new inbound
policy comes first are what the data plane's SA lineage admits.

Against charon (namespaces, kernel-libipsec, ESP in UDP) the stream starts
in charon's namespace, goes through its tunnel to our in-process echo and
back; either side rekeys the CHILD_SA or the IKE_SA mid-stream.
"""

import asyncio
import contextlib
import json
import os
import struct
import sys
from ipaddress import ip_address

import pytest
from ike.test_daemon import A_INNER, B_INNER, Node, pair, run, until
from test_charon import (
    CHARON_INNER,
    ECHO_ADDRESS,
    ECHO_PORT,
    SUITES,
    OurNode,
    charon_connection,
    charon_lab,  # noqa: F401 (the fixture, used by name)
    inside,
    our_connection,
)
from test_charon import run as run_in_lab
from test_charon import until as until_in_lab

from ipsec.dataplane import DataPlane
from ipsec.esp import DropReason, Encryption, Integrity, Mode, Protocol, SAConfig
from ipsec.esp.spd import Direction, TrafficSelector
from ipsec.ike.connection import StartAction
from ipsec.ike.daemon import ChildSaInstalled, ChildSaRemoved, IkeSaDown, IkeSaRekeyed

STREAM_PORT, SOURCE_PORT = 5062, 40002
SEQUENCE = struct.Struct("!I")
INTERVAL = 0.002
"""500 datagrams a second: dense enough that some are always in flight."""
PADDING = bytes(100)


class Stream:
    """A rate-limited sequence-numbered stream from A to B's echo and back."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.sent = 0
        self.at_b: set[int] = set()
        self.echoed: set[int] = set()
        self.send_drops = 0

        def echo(data, source):
            self.at_b.add(SEQUENCE.unpack_from(data)[0])
            b.dataplane.send(B_INNER, source[0], 17, STREAM_PORT, source[1], data)

        def returned(data, _source):
            self.echoed.add(SEQUENCE.unpack_from(data)[0])

        b.dataplane.bind(B_INNER, STREAM_PORT, echo)
        a.dataplane.bind(A_INNER, SOURCE_PORT, returned)

    async def run_until(self, done, limit=20.0):
        """Send until ``done()`` holds and one more second has passed."""
        loop = asyncio.get_running_loop()
        deadline, tail_end = loop.time() + limit, None
        while loop.time() < deadline:
            if tail_end is None and done():
                tail_end = loop.time() + 1.0
            if tail_end is not None and loop.time() >= tail_end:
                return
            payload = SEQUENCE.pack(self.sent) + PADDING
            drop = self.a.dataplane.send(
                A_INNER, B_INNER, 17, SOURCE_PORT, STREAM_PORT, payload
            )
            self.send_drops += drop is not None
            self.sent += 1
            await asyncio.sleep(INTERVAL)
        raise AssertionError("the rekey did not complete in time")

    async def drain(self):
        # Losses show in lost(); waiting longer would not bring them back.
        with contextlib.suppress(AssertionError):
            await until(lambda: len(self.echoed) == self.sent, timeout=2.0)

    def lost(self):
        expected = set(range(self.sent))
        return sorted(expected - self.at_b), sorted(expected - self.echoed)


def child_rekeys_done(a, b):
    def done():
        gone = [
            e for n in (a, b) for e in n.of(ChildSaRemoved) if e.reason == "rekeyed"
        ]
        return len(gone) >= 2

    return done


def ike_rekeys_done(a, b):
    return lambda: a.of(IkeSaRekeyed) and a.of(IkeSaDown) and b.of(IkeSaDown)


@pytest.mark.parametrize(
    ("side", "what"),
    [
        ("a", "child"),
        ("b", "child"),
        ("a", "ike"),
        ("b", "ike"),
    ],
)
def test_rekey_mid_stream_loses_nothing_both_directions(side, what):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        option = "child_rekey_time" if what == "child" else "ike_rekey_time"
        rekeyer = {option: 1.0}
        changes = {"a_changes": {"encap": True}, "b_changes": {}}
        changes[f"{side}_changes"].update(rekeyer)
        try:
            pair(a, b, **changes)
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            stream = Stream(a, b)
            done = child_rekeys_done(a, b) if what == "child" else ike_rekeys_done(a, b)
            await stream.run_until(done)
            await stream.drain()

            to_b, to_a = stream.lost()
            assert stream.sent > 500
            assert stream.send_drops == 0
            assert (to_b, to_a) == ([], [])
            if what == "child":
                first = a.of(ChildSaInstalled)[0]
                assert first.inbound_spi not in a.dataplane.stats()["inbound"]
        finally:
            a.close()
            b.close()

    run(scenario())


def esp_config(spi):
    return SAConfig(
        spi=spi,
        protocol=Protocol.ESP,
        mode=Mode.TUNNEL,
        encryption=Encryption.AES_GCM_16_128,
        integrity=Integrity.NONE,
        encryption_key=os.urandom(Encryption.AES_GCM_16_128.key_length),
        integrity_key=b"",
        tunnel_source=ip_address("127.0.0.1"),
        tunnel_destination=ip_address("127.0.0.1"),
    )


@pytest.mark.parametrize("linked", [True, False])
def test_inbound_policy_of_the_successor_admits_the_old_sa_only_when_linked(linked):
    """The old SA's traffic passes the new SA's policy only through lineage;
    an unrelated SA with a policy in front still refuses it (RFC 4301 §5.2)."""

    async def scenario():
        loop = asyncio.get_running_loop()
        a, b = DataPlane(loop), DataPlane(loop)
        try:
            a.open_udp_encap("127.0.0.1", 0)
            port_b = b.open_udp_encap("127.0.0.1", 0).local_address[1]
            old, new = esp_config(0x1000), esp_config(0x1001)
            side_a = TrafficSelector.from_network(f"{A_INNER}/32", 17)
            side_b = TrafficSelector.from_network(f"{B_INNER}/32", 17)
            a.add_sa(old, inbound=False, peer="127.0.0.1", peer_port=port_b)
            a.add_policy(side_a, side_b, old.spi)
            b.add_sa(old, inbound=True)
            b.add_policy(side_b, side_a, old.spi, direction=Direction.INBOUND)
            b.add_sa(new, inbound=True, replaces=old.spi if linked else None)
            b.add_policy(side_b, side_a, new.spi, direction=Direction.INBOUND, index=0)
            received = []
            b.bind(B_INNER, 7, lambda data, _source: received.append(data))

            assert a.send(A_INNER, B_INNER, 17, 1000, 7, b"in flight") is None
            await until(lambda: b.counters(old.spi).packets, timeout=2.0)
            await asyncio.sleep(0.05)

            refused = b.counters(old.spi).drops[DropReason.POLICY_MISMATCH]
            assert received == ([b"in flight"] if linked else [])
            assert refused == (0 if linked else 1)
        finally:
            a.close()
            b.close()

    run(scenario())


# -- the same against charon in namespaces -----------------------------------

# Runs in charon's namespace: a rate-limited sequence-numbered stream to our
# echo through charon's tunnel, and the echoes counted; JSON on stdout.
CHARON_STREAM = """
import json, socket, struct, sys, threading, time
target, source, seconds = (sys.argv[1], int(sys.argv[2])), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((source, 0))
s.settimeout(0.2)
echoed = set()
def receive():
    end = time.monotonic() + seconds + 3
    while time.monotonic() < end:
        try:
            data = s.recv(2048)
        except TimeoutError:
            continue
        echoed.add(struct.unpack_from("!I", data)[0])
reader = threading.Thread(target=receive)
reader.start()
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    s.sendto(struct.pack("!I", sent) + bytes(100), target)
    sent += 1
    time.sleep(0.004)
reader.join()
print(json.dumps({"sent": sent, "echoed": sorted(echoed)}))
"""
REKEY_AFTER, STREAM_SECONDS = 3, 7.0


def charon_side_changes(who, what):
    if who != "charon":
        return {}
    if what == "child":
        return {"child_rekey_time": f"{REKEY_AFTER}s", "child_life_time": "60s"}
    return {"ike_rekey_time": f"{REKEY_AFTER}s"}


def our_side_changes(who, what):
    if who != "ours":
        return {}
    return {"rekey_time" if what == "child" else "ike_rekey_time": REKEY_AFTER}


def echo_and_record(node):
    """Echo the stream back from our inner address; the sequence numbers seen."""
    at_us = set()

    def echo(data, source):
        at_us.add(SEQUENCE.unpack_from(data)[0])
        node.dataplane.send(ECHO_ADDRESS, source[0], 17, ECHO_PORT, source[1], data)

    node.dataplane.bind(ECHO_ADDRESS, ECHO_PORT, echo)
    return at_us


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("what", ["child", "ike"])
@pytest.mark.parametrize("who", ["ours", "charon"])
def test_rekey_mid_stream_with_charon_loses_nothing(charon_lab, who, what):  # noqa: F811
    lab, charon = charon_lab
    suite = SUITES[0].values[0]
    charon.load(charon_connection(suite, **charon_side_changes(who, what)))

    async def scenario():
        node = await OurNode.start()
        at_us = echo_and_record(node)
        try:
            connection = our_connection(
                suite, StartAction.START, **our_side_changes(who, what)
            )
            node.daemon.load(connection)
            await until_in_lab(lambda: node.of(ChildSaInstalled), 10, "CHILD_SA")
            stream = await asyncio.to_thread(
                lab.b.exec, sys.executable, "-c", CHARON_STREAM,
                ECHO_ADDRESS, str(ECHO_PORT), CHARON_INNER, str(STREAM_SECONDS),
                check=False,
            )  # fmt: skip
            report = json.loads(stream.stdout)

            expected = set(range(report["sent"]))
            assert report["sent"] > 1000
            if what == "child":
                assert [e for e in node.of(ChildSaRemoved) if e.reason == "rekeyed"]
            else:
                assert node.of(IkeSaRekeyed)
            assert sorted(expected - at_us) == []
            assert sorted(expected - set(report["echoed"])) == []
        finally:
            node.close()

    with inside(lab):
        run_in_lab(scenario())
