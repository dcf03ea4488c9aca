"""Two data planes over loopback: UDP encapsulation and the datagram channel."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address

import pytest
import uvloop
from peer_tools import require_root
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation

from ipsec.dataplane import (
    DatagramKind,
    DataPlane,
    DuplicateSA,
    PathDrop,
    UdpEncapSocket,
    UnknownSA,
    classify,
)
from ipsec.esp import (
    DropReason,
    Encryption,
    HardLifetimeReached,
    Integrity,
    Lifetime,
    LifetimeEvent,
    LifetimeKind,
    Mode,
    Protocol,
    SAConfig,
    SoftLifetimeReached,
)
from ipsec.esp.spd import Direction, PolicyAction, TrafficSelector

LOOPBACK = "127.0.0.1"
# Inner (tunnelled) addresses of the two ends; they never touch a real link.
INNER_A, INNER_B = "198.51.100.1", "198.51.100.2"
LOOPBACK6, INNER6_A, INNER6_B = "::1", "2001:db8::1", "2001:db8::2"
ECHO_PORT = 7
UNLIMITED = Lifetime()


@dataclass
class Pair:
    a: DataPlane
    b: DataPlane
    a_to_b: SAConfig
    b_to_a: SAConfig
    encap_a: UdpEncapSocket
    encap_b: UdpEncapSocket
    events: list[LifetimeEvent]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def sa_config(
    spi: int,
    source: str,
    destination: str,
    mode: Mode,
    encryption: Encryption,
    soft: Lifetime = UNLIMITED,
    hard: Lifetime = UNLIMITED,
) -> SAConfig:
    return SAConfig(
        soft=soft,
        hard=hard,
        spi=spi,
        protocol=Protocol.ESP,
        mode=mode,
        encryption=encryption,
        integrity=Integrity.NONE,
        encryption_key=os.urandom(encryption.key_length),
        integrity_key=b"",
        tunnel_source=ip_address(source),
        tunnel_destination=ip_address(destination),
    )


def host(address: str, port: int | None = None) -> TrafficSelector:
    prefix = 128 if ":" in address else 32
    return TrafficSelector.from_network(f"{address}/{prefix}", 17, port)


def inner_addresses(mode: Mode, version: int = 4) -> tuple[str, str]:
    if mode is Mode.TRANSPORT:
        return (LOOPBACK, LOOPBACK) if version == 4 else (LOOPBACK6, LOOPBACK6)
    return (INNER_A, INNER_B) if version == 4 else (INNER6_A, INNER6_B)


def connect(
    loop: asyncio.AbstractEventLoop,
    mode: Mode,
    encryption: Encryption = Encryption.AES_GCM_16_128,
    inbound_b: TrafficSelector | None = None,
    version: int = 4,
    gro: bool = False,
    **lifetimes: Lifetime,
) -> Pair:
    """Two planes on loopback ports, one SA each way, policies both ways."""
    outer = LOOPBACK if version == 4 else LOOPBACK6
    events: list[LifetimeEvent] = []
    a = DataPlane(loop, lifetime_interval=0.01, on_lifetime_event=events.append)
    b = DataPlane(loop, lifetime_interval=0.01)
    encap_a = a.open_udp_encap(outer, 0)
    encap_b = b.open_udp_encap(outer, 0, gro=gro)
    port_a, port_b = encap_a.local_address[1], encap_b.local_address[1]
    a_to_b = sa_config(0x1000, outer, outer, mode, encryption, **lifetimes)
    b_to_a = sa_config(0x2000, outer, outer, mode, encryption)
    inner_a, inner_b = inner_addresses(mode, version)
    side_a, side_b = host(inner_a), host(inner_b)

    a.add_sa(a_to_b, inbound=False, peer=outer, peer_port=port_b)
    a.add_sa(b_to_a, inbound=True)
    b.add_sa(a_to_b, inbound=True)
    b.add_sa(b_to_a, inbound=False, peer=outer, peer_port=port_a)
    a.add_policy(side_a, side_b, a_to_b.spi)
    a.add_policy(side_a, side_b, b_to_a.spi, direction=Direction.INBOUND)
    b.add_policy(side_b, side_a, b_to_a.spi)
    b.add_policy(side_b, inbound_b or side_a, a_to_b.spi, direction=Direction.INBOUND)
    return Pair(a, b, a_to_b, b_to_a, encap_a, encap_b, events)


def serve_echo(plane: DataPlane, address: str, port: int) -> None:
    """A plain UDP echo service (RFC 862) on the channel."""

    def echo(payload: bytes, source: tuple[str, int]) -> None:
        plane.send(address, source[0], 17, port, source[1], payload)

    plane.bind(address, port, echo)


def collect(plane: DataPlane, address: str, port: int) -> list[tuple[bytes, tuple]]:
    received: list[tuple[bytes, tuple]] = []
    plane.bind(
        address, port, lambda payload, source: received.append((payload, source))
    )
    return received


def run_until(loop: asyncio.AbstractEventLoop, predicate, timeout: float = 3.0) -> bool:
    async def wait() -> bool:
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.005)
        return bool(predicate())

    return loop.run_until_complete(wait())


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize(
    "encryption", [Encryption.AES_GCM_16_128, Encryption.CHACHA20_POLY1305]
)
def test_channel_echo_round_trip(loop, mode, encryption, version) -> None:
    pair = connect(loop, mode, encryption, version=version)
    inner_a, inner_b = inner_addresses(mode, version)
    serve_echo(pair.b, inner_b, ECHO_PORT)
    replies = collect(pair.a, inner_a, 40000)
    payloads = [os.urandom(n) for n in (1, 160, 1200)] + [b""]

    for payload in payloads:
        assert pair.a.send(inner_a, inner_b, 17, 40000, ECHO_PORT, payload) is None

    assert run_until(loop, lambda: len(replies) == len(payloads))
    assert sorted(p for p, _ in replies) == sorted(payloads)
    assert {source for _, source in replies} == {(inner_b, ECHO_PORT)}
    assert pair.b.counters(pair.a_to_b.spi).packets == len(payloads)
    assert pair.a.counters(pair.b_to_a.spi).packets == len(payloads)
    pair.a.close()
    pair.b.close()


@pytest.mark.parametrize("gro", [False, True])
def test_channel_burst_batched_without_loss(loop, gro) -> None:
    pair = connect(loop, Mode.TUNNEL, gro=gro)
    received = collect(pair.b, INNER_B, 5004)
    count = 2000

    # Sent in one loop iteration, so the sender flushes them as GSO batches.
    for index in range(count):
        payload = index.to_bytes(4, "big") + bytes(168)
        pair.a.send(INNER_A, INNER_B, 17, 5004, 5004, payload)

    assert run_until(loop, lambda: len(received) == count)
    assert [int.from_bytes(p[:4], "big") for p, _ in received] == list(range(count))
    assert pair.encap_a.gso_batches >= count // 64
    # Over loopback a GSO batch reaches a GRO socket still in one piece.
    assert (pair.encap_b.coalesced_reads > 0) is gro
    pair.a.close()
    pair.b.close()


def test_channel_send_without_policy_dropped_and_counted(loop) -> None:
    pair = connect(loop, Mode.TUNNEL)
    sniffed = collect(pair.b, "198.51.100.9", 9)

    drop = pair.a.send(INNER_A, "198.51.100.9", 17, 9, 9, b"secret")

    assert drop is PathDrop.NO_POLICY
    assert pair.a.channel_counters.drops == {"no_policy": 1}
    assert pair.encap_a.counters.packets_out == 0
    assert not run_until(loop, lambda: sniffed, timeout=0.1)
    pair.a.close()
    pair.b.close()


def test_channel_discard_policy_wins_over_protect(loop) -> None:
    pair = connect(loop, Mode.TUNNEL)
    pair.a.add_policy(
        host(INNER_A, 53), host(INNER_B), action=PolicyAction.DISCARD, index=0
    )

    assert pair.a.send(INNER_A, INNER_B, 17, 53, ECHO_PORT, b"x") is PathDrop.DISCARD
    assert pair.a.send(INNER_A, INNER_B, 17, 54, ECHO_PORT, b"x") is None
    pair.a.close()
    pair.b.close()


def test_inbound_outside_selectors_dropped_as_policy_mismatch(loop) -> None:
    # A's outbound policy is wider than what B accepts on that SA: B must
    # decrypt, see the inner source port outside its selector, and drop.
    pair = connect(loop, Mode.TUNNEL, inbound_b=host(INNER_A, 1000))
    allowed = collect(pair.b, INNER_B, 7)
    refused = collect(pair.b, INNER_B, 8)

    pair.a.send(INNER_A, INNER_B, 17, 1001, 8, b"outside")
    pair.a.send(INNER_A, INNER_B, 17, 1000, 7, b"inside")

    assert run_until(loop, lambda: allowed)
    assert refused == []
    sa_counters = pair.b.counters(pair.a_to_b.spi, inbound=True)
    assert sa_counters.drops[DropReason.POLICY_MISMATCH] == 1
    pair.a.close()
    pair.b.close()


def test_ike_and_keepalive_share_the_encap_socket(loop) -> None:
    pair = connect(loop, Mode.TUNNEL)
    messages: list[tuple[bytes, tuple, tuple]] = []
    pair.b.set_ike_handler(lambda m, local, remote: messages.append((m, local, remote)))
    encap_a, encap_b = pair.encap_a, pair.encap_b
    ike = bytes(8) + b"\x21\x20\x22\x08" + bytes(16)  # IKE header, zero SPIr

    pair.a.send_ike(ike, LOOPBACK, encap_b.local_address)
    encap_a.start_keepalive(encap_b.local_address, interval=0.01)

    assert run_until(loop, lambda: messages and encap_b.keepalives_received >= 2)
    assert messages[0][0] == ike
    assert messages[0][2] == encap_a.local_address
    encap_a.stop_keepalive(encap_b.local_address)
    pair.a.close()
    pair.b.close()


@pytest.mark.parametrize(
    ("datagram", "kind"),
    [
        (b"\xff", DatagramKind.KEEPALIVE),
        (bytes(4) + b"ike", DatagramKind.IKE),
        (bytes(4), DatagramKind.MALFORMED),
        (b"", DatagramKind.MALFORMED),
        (b"\x00\x00\x10\x00\x00\x00", DatagramKind.MALFORMED),
        (b"\xfe", DatagramKind.MALFORMED),
        (b"\x00\x00\x10\x00\x00\x00\x00\x01", DatagramKind.ESP),
    ],
)
def test_classify_rfc3948_demultiplexing(datagram, kind) -> None:
    assert classify(datagram) is kind


def test_malformed_datagrams_counted_not_raised(loop) -> None:
    pair = connect(loop, Mode.TUNNEL)
    encap_b = pair.encap_b
    received = collect(pair.b, INNER_B, 5004)
    garbage = [
        b"",
        b"\x01",
        bytes(3),
        b"\xfe\xfe",  # too short for ESP or IKE
        b"\x00\x00\xde\xad" + bytes(60),  # unknown SPI
        pair.a_to_b.spi.to_bytes(4, "big") + os.urandom(1),  # half a header
        pair.a_to_b.spi.to_bytes(4, "big") + bytes(4),  # header only
        pair.a_to_b.spi.to_bytes(4, "big") + bytes(20),  # no room for the ICV
        pair.a_to_b.spi.to_bytes(4, "big") + os.urandom(100),  # bad ICV
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in garbage:
            sender.sendto(datagram, encap_b.local_address)

    assert run_until(loop, lambda: encap_b.counters.packets_in == len(garbage))
    sa = pair.b.counters(pair.a_to_b.spi, inbound=True)
    assert encap_b.counters.drops == {"malformed": 5}
    assert pair.b.sad.drops[DropReason.UNKNOWN_SPI] == 1
    assert sa.drops[DropReason.TRUNCATED] == 2
    assert sa.drops[DropReason.BAD_ICV] == 1
    assert received == []

    # The SA still works afterwards.
    pair.a.send(INNER_A, INNER_B, 17, 5004, 5004, b"after")
    assert run_until(loop, lambda: received)
    pair.a.close()
    pair.b.close()


def test_wire_format_decrypts_with_scapy(loop) -> None:
    """An independent ESP implementation opens what the channel sends."""
    pair = connect(loop, Mode.TUNNEL)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((LOOPBACK, 0))
    sink.settimeout(2)
    pair.a.update_sa(pair.a_to_b.spi, peer_port=sink.getsockname()[1])

    pair.a.send(INNER_A, INNER_B, 17, 5004, 5006, b"rtp-ish payload")
    loop.run_until_complete(asyncio.sleep(0.01))
    datagram = sink.recv(2048)
    sink.close()

    sa = SecurityAssociation(
        ESP, spi=pair.a_to_b.spi, crypt_algo="AES-GCM",
        crypt_key=pair.a_to_b.encryption_key, esn_en=True, esn=0,
    )  # fmt: skip
    outer = IP(src=LOOPBACK, dst=LOOPBACK) / ESP(datagram)
    tunnelled = sa.decrypt(IP(bytes(outer))).payload

    # The inner packet, checksums included, is what scapy itself would build.
    expected = (
        IP(src=INNER_A, dst=INNER_B, flags="DF", id=0)
        / UDP(sport=5004, dport=5006)
        / b"rtp-ish payload"
    )
    assert bytes(tunnelled) == bytes(expected)
    pair.a.close()
    pair.b.close()


def test_lifetime_events_reported_and_expired_sa_refuses(loop) -> None:
    pair = connect(
        loop, Mode.TUNNEL, soft=Lifetime(packets=2), hard=Lifetime(packets=3)
    )
    events, spi = pair.events, pair.a_to_b.spi

    results = [pair.a.send(INNER_A, INNER_B, 17, 1, 2, b"x") for _ in range(4)]

    assert results == [None, None, None, PathDrop.SA_EXPIRED]
    assert run_until(loop, lambda: len(events) == 2)
    assert events == [
        SoftLifetimeReached(spi, LifetimeKind.PACKETS),
        HardLifetimeReached(spi, LifetimeKind.PACKETS),
    ]
    assert pair.a.channel_counters.drops == {"sa_expired": 1}
    pair.a.close()
    pair.b.close()


def test_lifetime_seconds_expire_an_idle_sa(loop) -> None:
    pair = connect(loop, Mode.TUNNEL, hard=Lifetime(seconds=0.05))
    events = pair.events

    assert run_until(loop, lambda: events)

    assert events == [HardLifetimeReached(pair.a_to_b.spi, LifetimeKind.SECONDS)]
    assert pair.a.send(INNER_A, INNER_B, 17, 1, 2, b"x") is PathDrop.SA_EXPIRED
    pair.a.close()
    pair.b.close()


def test_get_spi_skips_reserved_taken_and_repeated_values(loop) -> None:
    candidates = iter([0, 255, 0x1000, 0x2000, 0x3000, 0x3000, 0x4000])
    plane = DataPlane(loop, spi_source=lambda: next(candidates))
    plane.open_udp_encap(LOOPBACK, 0)
    plane.add_sa(sa_config(0x1000, LOOPBACK, LOOPBACK, Mode.TUNNEL,
                           Encryption.AES_GCM_16_128), inbound=True)  # fmt: skip

    first, second = plane.get_spi(), plane.get_spi()

    # 0 and 1-255 are reserved (RFC 4303 §2.1), 0x1000 is installed, and
    # 0x2000 is handed out once only.
    assert (first, second) == (0x2000, 0x3000)
    assert plane.get_spi() == 0x4000
    plane.close()


def test_sa_management_errors_are_typed(loop) -> None:
    pair = connect(loop, Mode.TUNNEL)

    with pytest.raises(DuplicateSA):
        pair.b.add_sa(pair.a_to_b, inbound=True)
    with pytest.raises(UnknownSA):
        pair.a.update_sa(0xDEAD, peer_port=1)
    pair.b.del_sa(pair.a_to_b.spi, inbound=True)
    with pytest.raises(UnknownSA):
        pair.b.counters(pair.a_to_b.spi, inbound=True)

    # Traffic for the deleted SA now counts as an unknown SPI at B.
    pair.a.send(INNER_A, INNER_B, 17, 1, 2, b"x")
    assert run_until(loop, lambda: pair.b.sad.drops[DropReason.UNKNOWN_SPI] == 1)
    pair.a.close()
    pair.b.close()


def captured_udp_checksums(capture: socket.socket, port: int) -> list[int]:
    """UDP checksums of outgoing IPv4 frames to ``port`` seen on lo so far."""
    checksums = []
    while True:
        try:
            frame, (_, _, packet_type, *_) = capture.recvfrom(65535)
        except BlockingIOError:
            return checksums
        if packet_type != socket.PACKET_OUTGOING:
            continue  # lo shows every frame twice, leaving and arriving
        packet = frame[14:]  # lo frames carry a zeroed Ethernet header
        if packet[0] >> 4 != 4 or packet[9] != 17:
            continue
        udp = packet[(packet[0] & 0x0F) * 4 :]
        if int.from_bytes(udp[2:4], "big") == port:
            checksums.append(int.from_bytes(udp[6:8], "big"))


def test_udp_checksum_zero_on_single_sends_computed_on_gso_batches(loop) -> None:
    require_root("an AF_PACKET capture on lo")
    pair = connect(loop, Mode.TUNNEL)
    received = collect(pair.b, INNER_B, 5004)
    port_b = pair.encap_b.local_address[1]
    # Opened last and with a large buffer: other processes' loopback
    # traffic must not fill it before these frames arrive.
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    capture.setsockopt(socket.SOL_SOCKET, 33, 64 * 1024 * 1024)  # SO_RCVBUFFORCE
    capture.bind(("lo", 0))
    capture.setblocking(False)

    # One datagram per loop iteration leaves alone (RFC 3948 §3.1.1: zero);
    # a burst in one iteration leaves as one GSO batch, which Linux only
    # sends with checksums.
    pair.a.send(INNER_A, INNER_B, 17, 5004, 5004, b"single")
    assert run_until(loop, lambda: len(received) == 1)
    for _ in range(10):
        pair.a.send(INNER_A, INNER_B, 17, 5004, 5004, bytes(100))
    assert run_until(loop, lambda: len(received) == 11)

    # lo passes the GSO batch on unsegmented: one frame for all ten.
    checksums = captured_udp_checksums(capture, port_b)
    capture.close()
    assert len(checksums) == 2
    assert checksums[0] == 0
    assert checksums[1] != 0
    assert pair.encap_a.gso_batches == 1
    pair.a.close()
    pair.b.close()


def test_transport_mode_sa_without_addresses_as_ike_installs_it(loop) -> None:
    # The IKE daemon installs transport-mode SAs without tunnel addresses and
    # gives the inbound one only its local address: the peer's is then the
    # source of the datagrams.
    key = os.urandom(20)
    config = SAConfig(
        spi=0x5000, protocol=Protocol.ESP, mode=Mode.TRANSPORT,
        encryption=Encryption.AES_GCM_16_128, integrity=Integrity.NONE,
        encryption_key=key, integrity_key=b"",
    )  # fmt: skip
    a, b = DataPlane(loop), DataPlane(loop)
    a.open_udp_encap(LOOPBACK, 0)
    port_b = b.open_udp_encap(LOOPBACK, 0).local_address[1]
    a.add_sa(config, inbound=False, peer=LOOPBACK, peer_port=port_b, local=LOOPBACK)
    b.add_sa(config, inbound=True, local=LOOPBACK)
    a.add_policy(host(LOOPBACK), host(LOOPBACK), config.spi)
    b.add_policy(
        host(LOOPBACK), host(LOOPBACK), config.spi, direction=Direction.INBOUND
    )
    received = collect(b, LOOPBACK, 5060)

    assert a.send(LOOPBACK, LOOPBACK, 17, 5061, 5060, b"OPTIONS") is None

    assert run_until(loop, lambda: received)
    assert received == [(b"OPTIONS", (LOOPBACK, 5061))]
    a.close()
    b.close()
