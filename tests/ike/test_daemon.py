"""Two IKE daemons on loopback: real sockets, real data planes, real timers.

Each daemon has its own DataPlane; the CHILD_SA they negotiate must carry
UDP both ways through the in-process channel, so the ESP engine checks
SPIs, keys and policies end to end. Ports are picked by the kernel (0), so
pytest-xdist workers never collide.
"""

import asyncio
import contextlib
import logging
import random
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from peer_tools import require_root

from ipsec.dataplane import DataPlane
from ipsec.esp import Encryption, Integrity, Mode, Protocol, SAConfig
from ipsec.ike.config import DpdAction, Identity
from ipsec.ike.connection import (
    ChildDefinition,
    ConnectionDefinition,
    StartAction,
    parse_proposal,
    traffic_selector,
)
from ipsec.ike.constants import EncrId, IdType, NotifyType, ProtocolId
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRefused,
    ChildSaRemoved,
    DaemonSettings,
    IkeDaemon,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    PeerDead,
)
from ipsec.ike.ike_sa import IkeSa
from ipsec.ike.keylog import IkeKeyLog, decryption_table_row
from ipsec.ike.keymat import PresharedKey
from ipsec.ike.message import decode_message

from .test_ike_sa import establish, ike_proposal, seeded

A_ID = Identity(IdType.ID_FQDN, b"sbc.example.com")
B_ID = Identity(IdType.ID_FQDN, b"trunk.example.com")
PSK = PresharedKey(b"loopback trunk secret")
A_INNER, B_INNER = "10.1.0.1", "10.2.0.1"
ECHO_PORT = 5060


def connection(
    name,
    local,
    remote,
    local_id,
    remote_id,
    *,
    local_net,
    remote_net,
    ike="aes128gcm16-prfsha256-x25519",
    esp="aes128gcm16",
    psk=PSK,
    child_rekey_time=None,
    mode=Mode.TUNNEL,
    **changes,
):
    child = ChildDefinition(
        "sip",
        (traffic_selector(local_net),),
        (traffic_selector(remote_net),),
        (parse_proposal(esp, ProtocolId.ESP),),
        mode=mode,
        rekey_time=child_rekey_time,
    )
    return ConnectionDefinition(
        name=name,
        local_address=ip_address(local),
        remote_address=ip_address(remote) if remote else None,
        local_id=local_id,
        remote_id=remote_id,
        psk=psk,
        ike_proposals=(parse_proposal(ike, ProtocolId.IKE),),
        child=child,
        **changes,
    )


class Node:
    """One daemon, its data plane and the events it emitted."""

    def __init__(self, host, random_bytes=None, **settings):
        loop = asyncio.get_running_loop()
        self.dataplane = DataPlane(loop)
        settings = DaemonSettings(host, ike_port=0, nat_t_port=0, **settings)
        options = {"random_bytes": random_bytes} if random_bytes else {}
        self.daemon = IkeDaemon(self.dataplane, settings, **options)
        self.events = []
        self.daemon.subscribe(self.events.append)
        self.daemon.start()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    def close(self):
        self.daemon.close()
        self.dataplane.close()


async def until(predicate, timeout=5.0):
    """Let the loop run until ``predicate()`` holds; bounded in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def pair(
    a, b, *, a_changes=None, b_changes=None, mode=Mode.TUNNEL,
    a_net="10.1.0.0/24", b_net="10.2.0.0/24",
    a_address="127.0.0.1", b_address="127.0.0.2",
):  # fmt: skip
    """Load A (initiator, start) and B (responder) connections."""
    b.daemon.load(
        connection(
            "to-a", b_address, a_address, B_ID, A_ID,
            local_net=b_net, remote_net=a_net, mode=mode,
            **(b_changes or {}),
        )
    )  # fmt: skip
    a.daemon.load(
        connection(
            "to-b", a_address, b_address, A_ID, B_ID,
            local_net=a_net, remote_net=b_net, mode=mode,
            remote_port=b.daemon.ike_port,
            remote_nat_t_port=b.daemon.nat_t_port,
            start_action=StartAction.START,
            **(a_changes or {}),
        )
    )  # fmt: skip


async def echo_round_trip(a, b, payload, a_inner=A_INNER, b_inner=B_INNER):
    """A sends UDP to B's echo through the CHILD_SA and gets it back."""
    received = []

    def echo(data, source):
        b.dataplane.send(b_inner, source[0], 17, ECHO_PORT, source[1], data)

    b.dataplane.bind(b_inner, ECHO_PORT, echo)
    a.dataplane.bind(a_inner, 40000, lambda data, source: received.append(data))
    # A few tries: a rekey may be switching SPIs while the datagram flies.
    for _ in range(10):
        drop = a.dataplane.send(a_inner, b_inner, 17, 40000, ECHO_PORT, payload)
        assert drop is None
        with contextlib.suppress(AssertionError):
            await until(lambda: received, timeout=0.5)
            return received[:1]
    raise AssertionError("no echo through the CHILD_SA")


@pytest.mark.parametrize(
    ("ike", "esp"),
    [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("aes256-sha256-ecp256", "aes256-sha256"),
    ],
)
def test_daemons_install_child_sa_and_carry_udp_encap(ike, esp):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            changes = {"ike": ike, "esp": esp, "encap": True}
            pair(a, b, a_changes=changes, b_changes={"ike": ike, "esp": esp})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            echoed = await echo_round_trip(a, b, b"OPTIONS sip:trunk SIP/2.0")

            [a_child], [b_child] = a.of(ChildSaInstalled), b.of(ChildSaInstalled)
            [a_up], [b_up] = a.of(IkeSaUp), b.of(IkeSaUp)
            assert echoed == [b"OPTIONS sip:trunk SIP/2.0"]
            assert a_child.inbound_spi == b_child.outbound_spi
            assert a_child.outbound_spi == b_child.inbound_spi
            assert a_child.encapsulated and b_child.encapsulated
            assert a_up.is_initiator and not b_up.is_initiator
            assert (a_up.spi_i, a_up.spi_r) == (b_up.spi_i, b_up.spi_r)
            # The responder answers where IKE_AUTH came from: A's 4500 socket.
            assert b_up.remote == (IPv4Address("127.0.0.1"), a.daemon.nat_t_port)
            stats = b.dataplane.stats()["inbound"][b_child.inbound_spi]
            assert stats["packets"] == 1
        finally:
            a.close()
            b.close()

    run(scenario())


@pytest.mark.root
@pytest.mark.parametrize(
    ("mode", "a_net", "b_net"),
    [
        (Mode.TUNNEL, "10.1.0.0/24", "10.2.0.0/24"),
        (Mode.TRANSPORT, "127.0.0.1/32", "127.0.0.2/32"),
    ],
)
def test_daemon_without_nat_stays_on_500_and_uses_raw_esp(mode, a_net, b_net):
    require_root("raw ESP sockets")

    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            nets = {"mode": mode, "a_net": a_net, "b_net": b_net}
            pair(a, b, **nets)
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            inner = (A_INNER, B_INNER) if mode is Mode.TUNNEL else (
                "127.0.0.1", "127.0.0.2")  # fmt: skip

            echoed = await echo_round_trip(a, b, b"raw", *inner)

            [a_up], [b_up] = a.of(IkeSaUp), b.of(IkeSaUp)
            [a_child] = a.of(ChildSaInstalled)
            assert echoed == [b"raw"]
            assert not a_up.encapsulated and not b_up.encapsulated
            assert not a_child.encapsulated and a_child.mode is mode
            assert b_up.remote == (IPv4Address("127.0.0.1"), a.daemon.ike_port)
            paths = a.dataplane.stats()["paths"]
            assert any(
                k.startswith("raw:") and v["packets_out"] for k, v in paths.items()
            )
        finally:
            a.close()
            b.close()

    run(scenario())


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_terminate_deletes_on_both_sides_and_empties_the_dataplanes(side):
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            here, there = (a, b) if side == "initiator" else (b, a)

            affected = here.daemon.terminate(here.daemon.ike_sas()[0].connection.name)
            await until(lambda: here.of(IkeSaDown) and there.of(IkeSaDown))

            [installed] = here.of(ChildSaInstalled)
            [gone] = here.of(ChildSaRemoved)
            assert affected == 1
            assert (gone.inbound_spi, gone.outbound_spi) == (
                installed.inbound_spi,
                installed.outbound_spi,
            )
            for node in (a, b):
                assert node.dataplane.stats()["inbound"] == {}
                assert node.dataplane.stats()["outbound"] == {}
                assert len(node.dataplane.spd) == 0
                assert node.daemon.ike_sas() == []
            assert [e.reason for e in here.of(IkeSaDown)] == ["deleted locally"]
            assert [e.reason for e in there.of(IkeSaDown)] == ["deleted by the peer"]
            drop = a.dataplane.send(A_INNER, B_INNER, 17, 40000, ECHO_PORT, b"x")
            assert drop is not None
        finally:
            a.close()
            b.close()

    run(scenario())


def test_wrong_psk_fails_without_installing_anything():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            wrong = {"psk": PresharedKey(b"not the trunk secret")}
            pair(a, b, a_changes={"encap": True, **wrong})
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))

            [a_down], [b_down] = a.of(IkeSaDown), b.of(IkeSaDown)
            assert a_down.notify_type == NotifyType.AUTHENTICATION_FAILED
            assert b_down.notify_type == NotifyType.AUTHENTICATION_FAILED
            assert not a.of(ChildSaInstalled) and not b.of(ChildSaInstalled)
            assert a.daemon.ike_sas() == [] and b.daemon.ike_sas() == []
            assert b.dataplane.stats()["inbound"] == {}
        finally:
            a.close()
            b.close()

    run(scenario())


# ---------------------------------------------------------------------------
# The responder's guards: retransmitted IKE_SA_INIT, half-open cap and timeout


def ike_sa_init(spi):
    """An IKE_SA_INIT request from a throwaway initiator engine."""
    config = connection(
        "probe", "127.0.0.1", "127.0.0.2", A_ID, B_ID,
        local_net="10.1.0.0/24", remote_net="10.2.0.0/24",
    ).ike_sa_config()  # fmt: skip
    engine = IkeSa(config, is_initiator=True, local_spi=spi, random_bytes=seeded(7))
    engine.initiate(0.0)
    [datagram] = engine.datagrams_to_send()
    return datagram


async def exchange(sock, port, datagram):
    """Send one datagram to B and wait for one answer."""
    loop = asyncio.get_running_loop()
    sock.sendto(datagram, ("127.0.0.2", port))
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


def probe_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_retransmitted_ike_sa_init_reaches_the_same_ike_sa():
    async def scenario():
        b = Node("127.0.0.2")
        sock = probe_socket()
        try:
            pair_b_only(b)
            request = ike_sa_init(bytes.fromhex("0102030405060708"))
            answers = [
                await exchange(sock, b.daemon.ike_port, request) for _ in range(2)
            ]

            first, second = (decode_message(a) for a in answers)
            assert answers[0] == answers[1]
            assert first.spi_r == second.spi_r != bytes(8)
            assert len(b.daemon.ike_sas()) == 1
            assert b.daemon.manager.half_open == 1
        finally:
            sock.close()
            b.close()

    run(scenario())


def pair_b_only(b, **changes):
    b.daemon.load(
        connection(
            "to-a", "127.0.0.2", "127.0.0.1", B_ID, A_ID,
            local_net="10.2.0.0/24", remote_net="10.1.0.0/24", **changes,
        )
    )  # fmt: skip


def test_half_open_cap_drops_further_ike_sa_init():
    async def scenario():
        b = Node("127.0.0.2", max_half_open=2)
        sock = probe_socket()
        try:
            pair_b_only(b)
            for n in range(1, 4):
                spi = bytes([n]) * 8
                sock.sendto(ike_sa_init(spi), ("127.0.0.2", b.daemon.ike_port))
            await until(lambda: b.daemon.drops["half-open limit"] == 1)

            assert len(b.daemon.ike_sas()) == 2
            assert b.daemon.manager.half_open == 2
        finally:
            sock.close()
            b.close()

    run(scenario())


def test_half_open_ike_sa_is_forgotten_after_the_timeout():
    async def scenario():
        b = Node("127.0.0.2", half_open_timeout=0.2)
        sock = probe_socket()
        try:
            pair_b_only(b)
            sock.sendto(ike_sa_init(b"\x09" * 8), ("127.0.0.2", b.daemon.ike_port))
            await until(lambda: b.daemon.ike_sas())
            await until(lambda: b.of(IkeSaDown), timeout=3)

            [down] = b.of(IkeSaDown)
            assert down.reason == "half-open IKE_SA timed out"
            assert b.daemon.ike_sas() == [] and b.daemon.manager.half_open == 0
        finally:
            sock.close()
            b.close()

    run(scenario())


def test_unknown_peer_gets_no_ike_sa():
    async def scenario():
        b = Node("127.0.0.2")
        sock = probe_socket()
        try:
            pair_b_only(b)
            b.daemon.connections.clear()
            sock.sendto(ike_sa_init(b"\x05" * 8), ("127.0.0.2", b.daemon.ike_port))
            await until(lambda: b.daemon.drops["no connection for the peer"] == 1)

            assert b.daemon.ike_sas() == []
        finally:
            sock.close()
            b.close()

    run(scenario())


# ---------------------------------------------------------------------------
# Keys: in the opt-in key log, never in the text log


def test_ike_keylog_holds_keys_and_the_log_does_not(tmp_path, caplog):
    keylog_path = tmp_path / "ike.keys"

    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        a.daemon._keylog = IkeKeyLog(str(keylog_path))
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [sa] = a.daemon.ike_sas()
            return sa.engine.export_keys()
        finally:
            a.close()
            b.close()

    with caplog.at_level(logging.DEBUG):
        transforms, keys = run(scenario())

    row = keylog_path.read_text().strip().split(",")
    assert row[2:4] == [keys.sk_ei.hex(), keys.sk_er.hex()]
    assert row[4] == '"AES-GCM-128 with 16 octet ICV [RFC5282]"'
    assert oct(keylog_path.stat().st_mode & 0o777) == "0o600"
    text = caplog.text
    assert "IKE_SA established" in text
    for secret in (keys.sk_d, keys.sk_ei, keys.sk_er, keys.sk_pi, PSK.secret):
        assert secret.hex() not in text


def test_nat_keepalives_flow_while_behind_a_nat():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            # encap fakes a NAT in front of A, so A keeps the mapping open.
            pair(a, b, a_changes={"encap": True, "keepalive_interval": 0.05})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            encap = b.daemon._encap
            await until(lambda: encap.keepalives_received >= 2)

            a.daemon.terminate("to-b")
            await until(lambda: a.of(IkeSaDown))
            seen = encap.keepalives_received
            await asyncio.sleep(0.2)
            assert encap.keepalives_received == seen
        finally:
            a.close()
            b.close()

    run(scenario())


def test_child_sa_rekey_replaces_the_pair_and_traffic_continues():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True, "child_rekey_time": 0.3})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            assert await echo_round_trip(a, b, b"before")

            await until(lambda: a.of(ChildSaRemoved) and b.of(ChildSaRemoved))
            echoed = await echo_round_trip(a, b, b"after")

            first, second = a.of(ChildSaInstalled)[:2]
            [old] = a.of(ChildSaRemoved)[:1]
            assert second.rekeyed_spi == first.inbound_spi
            assert old.inbound_spi == first.inbound_spi and old.reason == "rekeyed"
            assert echoed == [b"after"]
            assert set(a.dataplane.stats()["inbound"]) >= {second.inbound_spi}
            assert first.inbound_spi not in a.dataplane.stats()["inbound"]
            assert not a.of(IkeSaDown) and not b.of(IkeSaDown)
        finally:
            a.close()
            b.close()

    run(scenario())


def test_dead_peer_is_reported_and_its_sas_removed():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            liveness = {"dpd_delay": 0.1, "retransmit_timeout": 0.05,
                        "retransmit_tries": 2}  # fmt: skip
            pair(a, b, a_changes={"encap": True, **liveness})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            b.close()  # B vanishes without a Delete
            await until(lambda: a.of(PeerDead), timeout=5)

            [down] = a.of(IkeSaDown)
            assert down.reason == "no answer from the peer"
            assert a.of(ChildSaRemoved)
            assert a.dataplane.stats()["inbound"] == {} and len(a.dataplane.spd) == 0
        finally:
            a.close()

    run(scenario())


def test_initial_contact_from_a_restarted_peer_replaces_its_old_ike_sa():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        restarted = None
        try:
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [old] = b.daemon.ike_sas()

            a.close()  # A loses its state without a Delete, then comes back
            restarted = Node("127.0.0.1")
            pair(restarted, b, a_changes={"encap": True})
            await until(lambda: restarted.of(ChildSaInstalled))
            await until(lambda: b.of(IkeSaDown))

            [down] = b.of(IkeSaDown)
            [new] = b.daemon.ike_sas()
            assert down.reason == "replaced after INITIAL_CONTACT"
            assert (down.spi_i, down.spi_r) == (old.engine.spi_i, old.engine.spi_r)
            assert new is not old
            assert len(b.dataplane.stats()["inbound"]) == 1
        finally:
            if restarted is not None:
                restarted.close()
            b.close()

    run(scenario())


def test_dead_peer_with_restart_initiates_again():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            liveness = {"dpd_delay": 0.1, "retransmit_timeout": 0.05,
                        "retransmit_tries": 2, "dpd_action": DpdAction.RESTART}  # fmt: skip
            pair(a, b, a_changes={"encap": True, **liveness})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [first] = a.daemon.ike_sas()

            b.close()
            await until(lambda: a.of(PeerDead), timeout=5)

            [again] = a.daemon.ike_sas()
            assert again is not first and again.is_initiator
            assert again.connection.name == "to-b"
        finally:
            a.close()

    run(scenario())


def test_garbage_on_both_ports_is_dropped_and_setup_still_works():
    async def scenario():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        sock = probe_socket()
        try:
            pair_b_only(b)
            valid = ike_sa_init(b"\x07" * 8)
            generator = random.Random(5)
            for n in range(300):
                data = bytearray(valid)
                for _ in range(generator.randint(1, 8)):
                    data[generator.randrange(len(data))] = generator.randrange(256)
                if n % 3 == 0:
                    data = generator.randbytes(generator.randint(0, 80))
                port = b.daemon.ike_port
                if n % 2:
                    data, port = b"\x00\x00\x00\x00" + data, b.daemon.nat_t_port
                sock.sendto(bytes(data), ("127.0.0.2", port))
            await asyncio.sleep(0.3)
            b.daemon.terminate("to-a")  # forget half-open IKE_SAs the mutants made

            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            assert errors == []
            assert sum(b.daemon.drops.values()) > 0
        finally:
            sock.close()
            a.close()
            b.close()

    run(scenario())


def test_ike_keylog_is_off_unless_the_variable_names_a_file(tmp_path):
    path = str(tmp_path / "ike.keys")

    assert IkeKeyLog.from_environment({}) is None
    assert IkeKeyLog.from_environment({"SBC_IKE_KEYLOG": path}).path == path


def test_ike_keylog_skips_ciphers_wireshark_cannot_name():
    initiator, _ = establish(
        initiator_changes={
            "ike_proposals": (ike_proposal(encr=(EncrId.ENCR_CHACHA20_POLY1305, None)),)
        },
        responder_changes={
            "ike_proposals": (ike_proposal(encr=(EncrId.ENCR_CHACHA20_POLY1305, None)),)
        },
    )
    transforms, keys = initiator.export_keys()

    assert (
        decryption_table_row(initiator.spi_i, initiator.spi_r, transforms, keys) is None
    )


def test_ike_sa_rekey_keeps_child_sas_and_traffic():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            pair(a, b, a_changes={"encap": True, "ike_rekey_time": 0.3})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [old] = a.daemon.ike_sas()

            await until(lambda: a.of(IkeSaRekeyed) and b.of(IkeSaRekeyed))
            await until(lambda: a.of(IkeSaDown) and b.of(IkeSaDown))
            echoed = await echo_round_trip(a, b, b"after the IKE_SA rekey")

            [rekeyed] = a.of(IkeSaRekeyed)[:1]
            [down] = a.of(IkeSaDown)[:1]
            current = a.daemon.ike_sas()
            assert (rekeyed.spi_i, rekeyed.spi_r) == (
                old.engine.spi_i,
                old.engine.spi_r,
            )
            assert (down.spi_i, down.spi_r, down.reason) == (
                old.engine.spi_i, old.engine.spi_r, "rekeyed",
            )  # fmt: skip
            assert old not in current and len(current) == 1
            assert len(current[0].children) == 1
            assert not a.of(ChildSaRemoved) and not b.of(ChildSaRemoved)
            assert echoed == [b"after the IKE_SA rekey"]
        finally:
            a.close()
            b.close()

    run(scenario())


def test_child_sa_the_dataplane_refuses_is_deleted_on_both_sides():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        try:
            # get_spi never hands out a taken SPI, so another installer takes
            # the reserved one before the CHILD_SA is installed.
            reserve = b.dataplane.get_spi

            def get_spi_then_lose_it():
                spi = reserve()
                b.dataplane.add_sa(sa_config(spi), inbound=True)
                return spi

            b.dataplane.get_spi = get_spi_then_lose_it
            pair(a, b, a_changes={"encap": True})
            await until(lambda: b.of(ChildSaRefused) and a.of(ChildSaRemoved))
            [refused] = b.of(ChildSaRefused)
            assert "installed already" in refused.reason
            assert not b.of(ChildSaInstalled)
            assert a.dataplane.stats()["inbound"] == {}
            assert a.daemon.ike_sas() and b.daemon.ike_sas()  # the IKE_SA lives
        finally:
            a.close()
            b.close()

    run(scenario())


def sa_config(spi):
    return SAConfig(
        spi=spi, protocol=Protocol.ESP, mode=Mode.TRANSPORT,
        encryption=Encryption.AES_GCM_16_128, integrity=Integrity.NONE,
        encryption_key=bytes(20), integrity_key=b"",
    )  # fmt: skip


def test_daemons_over_ipv6_loopback_carry_ipv4_inside():
    async def scenario():
        a, b = Node("::1"), Node("::1")
        try:
            pair(a, b, a_changes={"encap": True}, a_address="::1", b_address="::1")
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))

            echoed = await echo_round_trip(a, b, b"over IPv6")

            [b_up] = b.of(IkeSaUp)
            assert echoed == [b"over IPv6"]
            assert b_up.remote == (IPv6Address("::1"), a.daemon.nat_t_port)
        finally:
            a.close()
            b.close()

    run(scenario())


def test_replayed_request_from_elsewhere_does_not_move_the_peer():
    async def scenario():
        a, b = Node("127.0.0.1"), Node("127.0.0.2")
        sock = probe_socket()
        try:
            seen = []
            forward = b.daemon._on_nat_t_message
            b.dataplane.set_ike_handler(
                lambda data, local, remote: (
                    seen.append(data),
                    forward(data, local, remote),
                )
            )
            pair(a, b, a_changes={"encap": True})
            await until(lambda: a.of(ChildSaInstalled) and b.of(ChildSaInstalled))
            [sa] = b.daemon.ike_sas()
            where = sa.remote

            [ike_auth] = [d for d in seen if decode_message(d).message_id == 1]
            marker = b"\x00\x00\x00\x00"
            sock.sendto(marker + ike_auth, ("127.0.0.2", b.daemon.nat_t_port))
            await asyncio.sleep(0.2)

            assert (
                sa.remote == where != (IPv4Address("127.0.0.1"), sock.getsockname()[1])
            )
            assert await echo_round_trip(a, b, b"still here") == [b"still here"]
        finally:
            sock.close()
            a.close()
            b.close()

    run(scenario())
