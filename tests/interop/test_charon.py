"""Our IKE daemon against strongSwan's charon, with traffic through the tunnel.

Namespace A holds our node (192.0.2.1): the daemon, the data plane, a TUN
device serving the inner address 10.1.0.1 and an in-process UDP echo on
10.1.0.2:7. Namespace B holds charon (192.0.2.2) with kernel-libipsec and
the inner address 10.2.0.1. Both run ``encap = yes`` (charon) / ``encap``
(ours), so IKE floats to 4500 and ESP travels in UDP, which is all
kernel-libipsec speaks. Each test sets up the IKE_SA from one side, pings
10.1.0.1 from charon's namespace (kernel ICMP through our TUN), sends UDP
to our in-process echo, and checks that charon lists the same SPIs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace as dataclass_replace
from ipaddress import IPv4Address, ip_interface, ip_network

import pytest
from charon import Charon, CharonConnection, netns_entered
from netns import Lab, Namespace, stop, unique_name, veth_lab
from netns import run as run_command
from peer_tools import require_root, require_tool

from ipsec.dataplane import DataPlane, TunDevice
from ipsec.esp.keylog import EspKeyLog
from ipsec.ike.config import Identity
from ipsec.ike.connection import (
    ChildDefinition,
    ConnectionDefinition,
    StartAction,
    parse_proposal,
    traffic_selector,
)
from ipsec.ike.constants import IdType, ProtocolId
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRemoved,
    DaemonSettings,
    IkeDaemon,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
)
from ipsec.ike.ike_sa import IkeSaState
from ipsec.ike.keylog import IkeKeyLog
from ipsec.ike.keymat import PresharedKey

OUR_ADDRESS, CHARON_ADDRESS = "192.0.2.1", "192.0.2.2"
OUR_NET, CHARON_NET = "10.1.0.0/24", "10.2.0.0/24"
TUN_ADDRESS, ECHO_ADDRESS, CHARON_INNER = "10.1.0.1", "10.1.0.2", "10.2.0.1"
ECHO_PORT = 7
OUR_ID, CHARON_ID = "sbc.example.com", "trunk.example.com"
PSK = "interop secret, only for this test"

SUITES = [
    pytest.param(("aes128gcm16-prfsha256-x25519", "aes128gcm16"), id="gcm-x25519"),
    pytest.param(("aes256-sha256-modp2048", "aes256-sha256"), id="cbc-modp2048"),
]

# Runs in charon's namespace: UDP to our in-process echo, answer printed.
UDP_PROBE = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{CHARON_INNER}", 0))
s.settimeout(1.0)
for attempt in range(5):
    s.sendto(b"OPTIONS sip:probe SIP/2.0", ("{ECHO_ADDRESS}", {ECHO_PORT}))
    try:
        data, source = s.recvfrom(2048)
    except TimeoutError:
        continue
    print(source[0], source[1], data.decode())
    break
"""


@pytest.fixture
def charon_lab(tmp_path) -> Iterator[tuple[Lab, Charon]]:
    require_root("network namespaces, TUN devices and a private /run for charon")
    require_tool("charon", "strongswan-charon")
    require_tool("swanctl", "strongswan-swanctl")
    require_tool("ping", "iputils-ping")
    with veth_lab("192.0.2") as lab:
        lab.b.add_loopback_address(CHARON_INNER)
        charon = Charon(lab.b, tmp_path)
        try:
            charon.start()
            yield lab, charon
        finally:
            charon.stop()


def charon_connection(suite, start_action="none", **changes):
    ike, esp = suite
    return CharonConnection(
        local_addr=CHARON_ADDRESS, remote_addr=OUR_ADDRESS,
        local_id=CHARON_ID, remote_id=OUR_ID, psk=PSK,
        local_ts=CHARON_NET, remote_ts=OUR_NET,
        proposals=ike, esp_proposals=esp, start_action=start_action, **changes,
    )  # fmt: skip


def our_connection(
    suite, start_action=StartAction.NONE, rekey_time=None, ike_rekey_time=None
):
    ike, esp = suite
    child = ChildDefinition(
        "sip",
        (traffic_selector(OUR_NET),),
        (traffic_selector(CHARON_NET),),
        (parse_proposal(esp, ProtocolId.ESP),),
        rekey_time=rekey_time,
    )
    return ConnectionDefinition(
        name="charon",
        local_address=IPv4Address(OUR_ADDRESS),
        remote_address=IPv4Address(CHARON_ADDRESS),
        local_id=Identity(IdType.ID_FQDN, OUR_ID.encode()),
        remote_id=Identity(IdType.ID_FQDN, CHARON_ID.encode()),
        psk=PresharedKey(PSK.encode()),
        ike_proposals=(parse_proposal(ike, ProtocolId.IKE),),
        child=child,
        start_action=start_action,
        encap=True,
        ike_rekey_time=ike_rekey_time,
    )


class OurNode:
    """Daemon, data plane, TUN and UDP echo, all inside namespace A."""

    def __init__(self, dataplane, daemon):
        self.dataplane = dataplane
        self.daemon = daemon
        self.events = []
        self.echoed = 0
        daemon.subscribe(self.events.append)

    @classmethod
    async def start(cls, esp_keylog=None, ike_keylog=None, address=OUR_ADDRESS):
        dataplane = DataPlane(asyncio.get_running_loop(), keylog=esp_keylog)
        tun = await TunDevice.create(
            f"sbc{os.getpid() % 100000}",
            addresses=[ip_interface(f"{TUN_ADDRESS}/32")],
            routes=[ip_network(CHARON_NET)],
            route_source=IPv4Address(TUN_ADDRESS),
        )
        dataplane.attach_tun(tun)
        settings = DaemonSettings(address)
        node = cls(dataplane, IkeDaemon(dataplane, settings, keylog=ike_keylog))
        dataplane.bind(ECHO_ADDRESS, ECHO_PORT, node.echo)
        node.daemon.start()
        return node

    def echo(self, data, source):
        self.echoed += 1
        self.dataplane.send(ECHO_ADDRESS, source[0], 17, ECHO_PORT, source[1], data)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def close(self):
        self.daemon.close()
        self.dataplane.close()


async def until(predicate, timeout, why):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {why}")
        await asyncio.sleep(0.02)


@contextmanager
def inside(lab):
    """Run our node in namespace A for the span of the block."""
    with netns_entered(lab.a.name):
        yield


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


async def check_traffic(lab, charon, node):
    """Ping through our TUN, UDP through our channel, SPIs as charon lists them."""
    ping = await asyncio.to_thread(
        lab.b.exec, "ping", "-c", "3", "-i", "0.2", "-W", "2",
        "-I", CHARON_INNER, TUN_ADDRESS, check=False,
    )  # fmt: skip
    probe = await asyncio.to_thread(
        lab.b.exec, sys.executable, "-c", UDP_PROBE, check=False
    )
    listing = await asyncio.to_thread(charon.list_sas)

    [child] = node.of(ChildSaInstalled)
    assert " 0% packet loss" in ping.stdout, ping.stdout + charon.tail()
    assert probe.stdout.startswith(f"{ECHO_ADDRESS} {ECHO_PORT} OPTIONS sip:probe")
    assert node.echoed >= 1
    # charon's SPIs: its inbound is our outbound and the other way round.
    assert f"in  {child.outbound_spi:08x}" in listing, listing
    assert f"out {child.inbound_spi:08x}" in listing, listing
    inbound = node.dataplane.stats()["inbound"][child.inbound_spi]
    assert inbound["packets"] >= 4  # three echo requests and the UDP probe


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("suite", SUITES)
def test_charon_initiates_to_our_daemon(charon_lab, suite):
    lab, charon = charon_lab
    charon.load(charon_connection(suite))

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(suite))
            outcome = await asyncio.to_thread(charon.initiate)
            await until(lambda: node.of(ChildSaInstalled), 10, "our CHILD_SA")

            [up] = node.of(IkeSaUp)
            assert "initiate completed successfully" in outcome, outcome
            assert not up.is_initiator and up.encapsulated
            await check_traffic(lab, charon, node)
        finally:
            node.close()

    with inside(lab):
        run(scenario())


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("suite", SUITES)
def test_our_daemon_initiates_to_charon(charon_lab, suite):
    lab, charon = charon_lab
    charon.load(charon_connection(suite))

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(suite, StartAction.START))
            await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")

            [up] = node.of(IkeSaUp)
            assert up.is_initiator and up.encapsulated
            await check_traffic(lab, charon, node)
        finally:
            node.close()

    with inside(lab):
        run(scenario())


@pytest.mark.peer("charon")
@pytest.mark.root
def test_key_logs_let_tshark_decrypt_ike_auth_and_esp(charon_lab, tmp_path):
    tshark = require_tool("tshark", "tshark")
    tcpdump = require_tool("tcpdump", "tcpdump")
    lab, charon = charon_lab
    suite = ("aes128gcm16-prfsha256-x25519", "aes128gcm16")
    charon.load(charon_connection(suite))
    pcap, esp_keys, ike_keys = (tmp_path / n for n in ("c.pcap", "esp_sa", "ike"))
    capture = lab.a.spawn(
        [
            tcpdump,
            "-i",
            lab.a.veth,
            "-n",
            "-U",
            "--immediate-mode",
            "-c",
            "1000",
            "-w",
            str(pcap),
            "udp",
        ],
        stderr=subprocess.PIPE,
    )
    assert b"listening" in capture.stderr.readline()

    async def scenario():
        node = await OurNode.start(EspKeyLog(str(esp_keys)), IkeKeyLog(str(ike_keys)))
        try:
            node.daemon.load(our_connection(suite, StartAction.START))
            await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")
            await asyncio.to_thread(
                lab.b.exec, "ping", "-c", "2", "-i", "0.2", "-W", "2",
                "-I", CHARON_INNER, TUN_ADDRESS, check=False,
            )  # fmt: skip
        finally:
            node.close()

    with inside(lab):
        run(scenario())
    stop(capture)

    def dissect(*options):
        result = subprocess.run(
            [tshark, "-r", str(pcap), *options], capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        return result.stdout

    ike_row = ike_keys.read_text().strip()
    identities = dissect(
        "-o", f"uat:ikev2_decryption_table:{ike_row}",
        "-Y", "isakmp.exchangetype == 35", "-T", "fields", "-e", "isakmp.id.data.fqdn",
    )  # fmt: skip
    stacks = dissect(
        "-o", "esp.enable_encryption_decode:TRUE",
        "-o", "uat:esp_sa:" + esp_keys.read_text().strip(),
        "-T", "fields", "-e", "frame.protocols",
    )  # fmt: skip
    assert OUR_ID in identities and CHARON_ID in identities, identities
    decrypted = [s for s in stacks.split() if ":esp:ip:icmp" in s]
    assert len(decrypted) == 4, stacks  # two echo requests, two replies


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("deleter", ["charon", "ours"])
def test_delete_from_either_side_clears_both(charon_lab, deleter):
    lab, charon = charon_lab
    suite = ("aes128gcm16-prfsha256-x25519", "aes128gcm16")
    charon.load(charon_connection(suite))

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(suite, StartAction.START))
            await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")
            assert "ESTABLISHED" in await asyncio.to_thread(charon.list_sas)

            if deleter == "charon":
                outcome = await asyncio.to_thread(charon.terminate_ike)
                assert "terminate completed successfully" in outcome, outcome
            else:
                assert node.daemon.terminate("charon") == 1
            await until(lambda: node.of(IkeSaDown), 10, "our IKE_SA to go")
            listing = await asyncio.to_thread(charon.list_sas)

            [down] = node.of(IkeSaDown)
            [installed], [removed] = node.of(ChildSaInstalled), node.of(ChildSaRemoved)
            expected = (
                "deleted by the peer" if deleter == "charon" else "deleted locally"
            )
            assert down.reason == expected
            assert removed.inbound_spi == installed.inbound_spi
            assert node.dataplane.stats()["inbound"] == {}
            assert len(node.dataplane.spd) == 0
            assert "ESTABLISHED" not in listing and "INSTALLED" not in listing, listing
        finally:
            node.close()

    with inside(lab):
        run(scenario())


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("rekeyer", ["charon", "ours"])
def test_child_sa_rekey_from_either_side_keeps_traffic_flowing(charon_lab, rekeyer):
    lab, charon = charon_lab
    suite = ("aes256-sha256-modp2048", "aes256-sha256")
    charon_rekey = "2s" if rekeyer == "charon" else "3600s"
    charon.load(charon_connection(suite, child_rekey_time=charon_rekey))
    our_rekey = 1.0 if rekeyer == "ours" else None

    async def scenario():
        node = await OurNode.start()
        try:
            node.daemon.load(our_connection(suite, StartAction.START, our_rekey))
            await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")
            await until(lambda: node.of(ChildSaRemoved), 10, "the rekey")
            ping = await asyncio.to_thread(
                lab.b.exec, "ping", "-c", "3", "-i", "0.2", "-W", "2",
                "-I", CHARON_INNER, TUN_ADDRESS, check=False,
            )  # fmt: skip
            listing = await asyncio.to_thread(charon.list_sas)

            first, second = node.of(ChildSaInstalled)[:2]
            old = node.of(ChildSaRemoved)[0]
            assert second.rekeyed_spi == first.inbound_spi == old.inbound_spi
            assert old.reason == "rekeyed"
            assert " 0% packet loss" in ping.stdout, ping.stdout + charon.tail()
            assert f"in  {second.outbound_spi:08x}" in listing, listing
            assert f"out {second.inbound_spi:08x}" in listing, listing
            assert not node.of(IkeSaDown)
        finally:
            node.close()

    with inside(lab):
        run(scenario())


# ---------------------------------------------------------------------------
# A real NAT: our node behind a masquerading router, charon outside

BEHIND_NAT, ROUTER_INSIDE = "198.51.100.2", "198.51.100.1"
ROUTER_OUTSIDE, CHARON_OUTSIDE = "203.0.113.1", "203.0.113.2"


@contextmanager
def nat_lab(tmp_path):
    """Namespaces A (ours) - R (NAT) - B (charon), removed in any case."""
    names = [unique_name(p) for p in ("nta", "ntr", "ntb")]
    a = Namespace(names[0], unique_name("vna"), BEHIND_NAT)
    b = Namespace(names[2], unique_name("vnb"), CHARON_OUTSIDE)
    router_in, router_out = unique_name("vri"), unique_name("vro")
    created = []
    try:
        for name in names:
            run_command("ip", "netns", "add", name)
            created.append(name)
            run_command("ip", "-n", name, "link", "set", "lo", "up")
        wire(
            a.name,
            a.veth,
            f"{BEHIND_NAT}/24",
            names[1],
            router_in,
            f"{ROUTER_INSIDE}/24",
        )
        wire(
            b.name,
            b.veth,
            f"{CHARON_OUTSIDE}/24",
            names[1],
            router_out,
            f"{ROUTER_OUTSIDE}/24",
        )
        run_command("ip", "-n", a.name, "route", "add", "default", "via", ROUTER_INSIDE)
        router = ("ip", "netns", "exec", names[1])
        run_command(*router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run_command(*router, "iptables", "-t", "nat", "-A", "POSTROUTING",
                    "-o", router_out, "-j", "MASQUERADE")  # fmt: skip
        yield Lab(a, b)
    finally:
        for namespace in (a, b):
            for process in namespace.processes:
                stop(process)
        for name in created:
            run_command("ip", "netns", "delete", name, check=False)


def wire(left, left_veth, left_address, right, right_veth, right_address):
    run_command("ip", "link", "add", left_veth, "netns", left, "type", "veth",
                "peer", "name", right_veth, "netns", right)  # fmt: skip
    for namespace, veth, address in (
        (left, left_veth, left_address),
        (right, right_veth, right_address),
    ):
        run_command("ip", "-n", namespace, "addr", "add", address, "dev", veth)
        run_command("ip", "-n", namespace, "link", "set", veth, "up")


@pytest.mark.peer("charon")
@pytest.mark.root
def test_real_nat_floats_to_4500_and_keeps_the_mapping_alive(tmp_path):
    require_root("network namespaces, iptables NAT, TUN devices")
    require_tool("charon", "strongswan-charon")
    require_tool("swanctl", "strongswan-swanctl")
    require_tool("iptables", "iptables")
    require_tool("ping", "iputils-ping")
    tcpdump = require_tool("tcpdump", "tcpdump")
    with nat_lab(tmp_path) as lab:
        lab.b.add_loopback_address(CHARON_INNER)
        charon = Charon(lab.b, tmp_path)
        charon.start()
        connection = charon_connection(("aes128gcm16-prfsha256-x25519", "aes128gcm16"))
        connection.local_addr, connection.remote_addr = CHARON_OUTSIDE, "%any"
        connection.encap = "no"  # the NAT is real this time
        charon.load(connection)
        keepalives = lab.b.spawn(
            [tcpdump, "-i", lab.b.veth, "-n", "-l", "-c", "2",
             "udp dst port 4500 and udp[4:2] = 9"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        banner = b"".join(keepalives.stderr.readline() for _ in range(2))
        assert b"listening" in banner, banner

        async def scenario():
            node = await OurNode.start(address=BEHIND_NAT)
            try:
                ours = dataclass_replace(
                    our_connection(("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
                                   StartAction.START),
                    local_address=IPv4Address(BEHIND_NAT),
                    remote_address=IPv4Address(CHARON_OUTSIDE),
                    encap=False, keepalive_interval=0.2,
                )  # fmt: skip
                node.daemon.load(ours)
                await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")
                await check_traffic(lab, charon, node)
                seen = await asyncio.to_thread(keepalives.wait, 10)

                [up] = node.of(IkeSaUp)
                assert up.encapsulated
                assert up.remote == (IPv4Address(CHARON_OUTSIDE), 4500)
                assert seen == 0  # tcpdump saw two keepalives and exited
            finally:
                node.close()

        try:
            with inside(lab):
                run(scenario())
            listing = charon.list_sas()
            assert f"{ROUTER_OUTSIDE}[" in listing, listing  # the NAT's address
        finally:
            charon.stop()


@pytest.mark.peer("charon")
@pytest.mark.root
@pytest.mark.parametrize("rekeyer", ["charon", "ours"])
def test_ike_sa_rekey_from_either_side_keeps_the_tunnel(charon_lab, rekeyer):
    lab, charon = charon_lab
    suite = ("aes128gcm16-prfsha256-x25519", "aes128gcm16")
    charon_rekey = "2s" if rekeyer == "charon" else "3600s"
    charon.load(charon_connection(suite, ike_rekey_time=charon_rekey))
    our_rekey = 1.0 if rekeyer == "ours" else None

    async def scenario():
        node = await OurNode.start()
        try:
            connection = our_connection(suite, StartAction.START, None, our_rekey)
            node.daemon.load(connection)
            await until(lambda: node.of(ChildSaInstalled), 15, "our CHILD_SA")
            await until(lambda: node.of(IkeSaDown), 10, "the old IKE_SA to go")
            await check_traffic(lab, charon, node)
            # The one in use; one already rekeyed may still await its Delete.
            [current] = [
                sa
                for sa in node.daemon.ike_sas()
                if sa.engine.state is IkeSaState.ESTABLISHED
            ]
            listing = await asyncio.to_thread(charon.list_sas)

            [rekeyed] = node.of(IkeSaRekeyed)[:1]
            [down] = node.of(IkeSaDown)[:1]
            assert down.reason == "rekeyed"
            assert (down.spi_i, down.spi_r) == (rekeyed.spi_i, rekeyed.spi_r)
            assert f"{current.engine.spi_i.hex()}_i" in listing, listing
            assert f"{rekeyed.spi_i.hex()}_i" not in listing, listing
            assert not node.of(ChildSaRemoved)
        finally:
            node.close()

    with inside(lab):
        run(scenario())
