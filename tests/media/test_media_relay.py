"""The relay on real loopback sockets against independent RTP/SRTP peers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtpPacket
from media_helpers import Peer, RelayThread, rtp_packet, srtp_session

from sbc.media import (
    MediaDropReason,
    MediaSettings,
    MediaTimedOut,
    PortsExhausted,
    RemoteMedia,
    Side,
    SrtpParameters,
    SrtpSuite,
    UnknownLeg,
)
from sbc.media.relay import MediaSession


@pytest.fixture
def relay() -> Iterator[RelayThread]:
    thread = RelayThread()
    yield thread
    thread.stop()


def allocate(relay: RelayThread, a_host: str = "127.0.0.1", b_host: str = "127.0.0.1"):
    call_id = f"call-{os.urandom(4).hex()}"
    return relay.run(relay.relay.allocate(call_id, a_host, b_host))


def connect(
    relay: RelayThread, session: MediaSession, side: Side, peer: Peer, **options
) -> tuple[str, int]:
    """Signal ``peer`` as ``side``'s remote; return the relay's RTP address."""
    remote = RemoteMedia(host=peer.host, rtp_port=peer.port, **options)
    relay.call(lambda: session.update_leg(side, remote))
    local = session.local(side)
    return local.host, local.rtp_port


def test_rtp_relayed_bit_exact_both_ways(relay: RelayThread) -> None:
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller)
    to_b = connect(relay, session, Side.B, callee)

    for seq in range(20):
        sent = rtp_packet(seq)
        caller.send(sent, to_a)
        assert callee.receive() == sent
        answer = rtp_packet(seq, ssrc=0x55)
        callee.send(answer, to_b)
        assert caller.receive() == answer

    counters = session.counters(Side.A)
    assert counters.packets_received == 20
    assert counters.packets_sent == 20
    assert counters.statistics.lost == 0


@pytest.mark.parametrize("suite", list(SrtpSuite))
def test_srtp_bridged_to_rtp_bit_exact_suites(
    relay: RelayThread, suite: SrtpSuite
) -> None:
    # Leg A speaks SRTP with SDES keys, leg B plain RTP.
    caller_key = os.urandom(suite.key_length)
    relay_key = os.urandom(suite.key_length)
    caller_out = srtp_session(suite, caller_key, outbound=True)
    caller_in = srtp_session(suite, relay_key, outbound=False)
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    keys = SrtpParameters(suite, send_key=relay_key, receive_key=caller_key)
    to_a = connect(relay, session, Side.A, caller, srtp=keys)
    to_b = connect(relay, session, Side.B, callee)

    for seq in range(30):
        plain = rtp_packet(seq)
        caller.send(caller_out.protect(plain), to_a)
        assert callee.receive() == plain
        reply = rtp_packet(seq, ssrc=0x77, payload=os.urandom(160))
        callee.send(reply, to_b)
        assert caller_in.unprotect(caller.receive()) == reply


@pytest.mark.parametrize("suite", list(SrtpSuite))
def test_srtcp_bridged_to_rtcp_suites(relay: RelayThread, suite: SrtpSuite) -> None:
    caller_key = os.urandom(suite.key_length)
    relay_key = os.urandom(suite.key_length)
    caller_out = srtp_session(suite, caller_key, outbound=True)
    caller_in = srtp_session(suite, relay_key, outbound=False)
    session = allocate(relay)
    caller_rtp, caller_rtcp = Peer(), Peer()
    callee_rtp, callee_rtcp = Peer(), Peer()
    keys = SrtpParameters(suite, send_key=relay_key, receive_key=caller_key)
    connect(relay, session, Side.A, caller_rtp, rtcp_port=caller_rtcp.port, srtp=keys)
    connect(relay, session, Side.B, callee_rtp, rtcp_port=callee_rtcp.port)
    a, b = session.local(Side.A), session.local(Side.B)

    report = receiver_report(ssrc=0x1111, lost=7)
    caller_rtcp.send(caller_out.protect_rtcp(report), (a.host, a.rtcp_port))
    assert callee_rtcp.receive() == report
    callee_rtcp.send(report, (b.host, b.rtcp_port))
    assert caller_in.unprotect_rtcp(caller_rtcp.receive()) == report
    assert session.counters(Side.A).reported_packets_lost == 7


def test_srtp_to_srtp_with_different_suites_bit_exact(relay: RelayThread) -> None:
    a_suite, b_suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80, SrtpSuite.AEAD_AES_256_GCM
    a_peer_key, a_relay_key = os.urandom(30), os.urandom(30)
    b_peer_key, b_relay_key = os.urandom(44), os.urandom(44)
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    to_a = connect(
        relay,
        session,
        Side.A,
        caller,
        srtp=SrtpParameters(a_suite, a_relay_key, a_peer_key),
    )
    connect(
        relay,
        session,
        Side.B,
        callee,
        srtp=SrtpParameters(b_suite, b_relay_key, b_peer_key),
    )
    caller_out = srtp_session(a_suite, a_peer_key, outbound=True)
    callee_in = srtp_session(b_suite, b_relay_key, outbound=False)

    for seq in range(10):
        plain = rtp_packet(seq)
        caller.send(caller_out.protect(plain), to_a)
        assert callee_in.unprotect(callee.receive()) == plain


def test_srtp_forged_packet_dropped_and_counted(relay: RelayThread) -> None:
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
    caller_key = os.urandom(30)
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    keys = SrtpParameters(suite, send_key=os.urandom(30), receive_key=caller_key)
    to_a = connect(relay, session, Side.A, caller, srtp=keys)
    connect(relay, session, Side.B, callee)
    protected = srtp_session(suite, caller_key, outbound=True).protect(rtp_packet(1))

    forged = bytearray(protected)
    forged[20] ^= 0x01
    caller.send(bytes(forged), to_a)
    caller.send(protected, to_a)
    caller.send(protected, to_a)

    assert callee.receive() == rtp_packet(1)
    assert callee.nothing_arrives()
    drops = session.counters(Side.A).drops
    assert drops[MediaDropReason.SRTP_UNPROTECT_FAILED] == 2  # forged + replay


def test_latching_drops_injection_from_wrong_source(relay: RelayThread) -> None:
    session = allocate(relay)
    caller, callee, attacker = Peer(), Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller)
    connect(relay, session, Side.B, callee)

    attacker.send(rtp_packet(1, ssrc=0xBAD), to_a)
    assert callee.nothing_arrives()
    caller.send(rtp_packet(2), to_a)
    assert callee.receive() == rtp_packet(2)
    attacker.send(rtp_packet(3, ssrc=0xBAD), to_a)
    assert callee.nothing_arrives()

    assert session.counters(Side.A).drops[MediaDropReason.WRONG_SOURCE] == 2


def test_latching_any_source_follows_nat(relay: RelayThread) -> None:
    # The SDP names a private address the relay cannot reach; the peer's
    # packets arrive from its NAT binding, and the answer goes back there.
    session = allocate(relay)
    behind_nat, callee, late_attacker = Peer(), Peer(), Peer()
    unreachable = Peer()
    unreachable_port = unreachable.port
    unreachable.close()
    remote = RemoteMedia("127.0.0.1", unreachable_port, latch_any_source=True)
    relay.call(lambda: session.update_leg(Side.A, remote))
    to_a = (session.local(Side.A).host, session.local(Side.A).rtp_port)
    to_b = connect(relay, session, Side.B, callee)

    behind_nat.send(rtp_packet(1), to_a)
    assert callee.receive() == rtp_packet(1)
    callee.send(rtp_packet(1, ssrc=9), to_b)
    assert behind_nat.receive() == rtp_packet(1, ssrc=9)
    late_attacker.send(rtp_packet(2, ssrc=0xBAD), to_a)
    assert callee.nothing_arrives()


def test_rtcp_mux_on_one_leg_separate_ports_on_other(relay: RelayThread) -> None:
    session = allocate(relay)
    caller = Peer()
    callee_rtp, callee_rtcp = Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller, rtcp_mux=True)
    connect(relay, session, Side.B, callee_rtp, rtcp_port=callee_rtcp.port)
    b = session.local(Side.B)

    report = receiver_report(ssrc=0x2222, lost=3)
    caller.send(rtp_packet(5), to_a)
    caller.send(report, to_a)
    assert callee_rtp.receive() == rtp_packet(5)
    assert callee_rtcp.receive() == report

    callee_rtcp.send(report, (b.host, b.rtcp_port))
    assert caller.receive() == report
    assert session.counters(Side.A).reported_packets_lost == 3
    assert session.counters(Side.B).rtcp_received == 1


def test_ipv4_leg_and_ipv6_leg(relay: RelayThread) -> None:
    session = allocate(relay, a_host="127.0.0.1", b_host="::1")
    caller, callee = Peer("127.0.0.1"), Peer("::1")
    to_a = connect(relay, session, Side.A, caller)
    to_b = connect(relay, session, Side.B, callee)

    caller.send(rtp_packet(1), to_a)
    data, source = callee.receive_from()
    assert data == rtp_packet(1)
    assert source[0] == "::1" and source[1] == to_b[1]
    callee.send(rtp_packet(2, ssrc=3), to_b)
    assert caller.receive() == rtp_packet(2, ssrc=3)


def test_c20_telephone_event_payload_type_mapped_both_ways(
    relay: RelayThread,
) -> None:
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    a_types = {"PCMU/8000": 0, "telephone-event/8000": 101}
    b_types = {"PCMU/8000": 0, "telephone-event/8000": 96}
    to_a = connect(relay, session, Side.A, caller, payload_types=a_types)
    to_b = connect(relay, session, Side.B, callee, payload_types=b_types)

    # RFC 4733 §2.3: digit 5, end bit set, volume 10, duration 800.
    event = bytes([5, 0x80 | 10, 0x03, 0x20])
    caller.send(rtp_packet(1, payload_type=101, payload=event, marker=1), to_a)
    relayed = RtpPacket.parse(callee.receive())
    assert (relayed.payload_type, relayed.marker, relayed.payload) == (96, 1, event)

    callee.send(rtp_packet(2, payload_type=96, payload=event), to_b)
    assert RtpPacket.parse(caller.receive()).payload_type == 101
    caller.send(rtp_packet(3, payload_type=0), to_a)
    assert callee.receive() == rtp_packet(3, payload_type=0)


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x80", bytes(11), b"\x40" + bytes(171), b"\xc0" + bytes(20)],
    ids=["empty", "one_byte", "eleven_bytes", "version_1", "version_3"],
)
def test_malformed_packets_counted_as_drops(
    relay: RelayThread, datagram: bytes
) -> None:
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller)
    connect(relay, session, Side.B, callee)
    a = session.local(Side.A)

    caller.send(datagram, to_a)
    caller.send(datagram, (a.host, a.rtcp_port))
    caller.send(rtp_packet(1), to_a)

    assert callee.receive() == rtp_packet(1)
    drops = session.counters(Side.A).drops
    # The RTCP port is another socket: its datagram may be read a moment later.
    assert eventually(
        lambda: drops[MediaDropReason.SHORT] + drops[MediaDropReason.BAD_VERSION] == 2
    )


def test_reinvite_moves_remote_without_losing_packets(relay: RelayThread) -> None:
    session = allocate(relay)
    caller, callee, callee_moved = Peer(), Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller)
    to_b = connect(relay, session, Side.B, callee)
    callee.send(rtp_packet(1, ssrc=7), to_b)
    assert caller.receive() == rtp_packet(1, ssrc=7)

    connect(relay, session, Side.B, callee_moved)
    # Media toward the callee follows the new SDP at once ...
    caller.send(rtp_packet(2), to_a)
    assert callee_moved.receive() == rtp_packet(2)
    # ... and packets still in flight from the old address pass too,
    callee.send(rtp_packet(2, ssrc=7), to_b)
    assert caller.receive() == rtp_packet(2, ssrc=7)
    # until the new address is heard; then the old one is refused.
    callee_moved.send(rtp_packet(3, ssrc=7), to_b)
    assert caller.receive() == rtp_packet(3, ssrc=7)
    callee.send(rtp_packet(4, ssrc=7), to_b)
    assert caller.nothing_arrives()
    assert session.local(Side.B).rtp_port == to_b[1]


def test_media_timeout_reported_once() -> None:
    settings = MediaSettings(
        port_min=40000 + os.getpid() % 1000 * 20,
        port_max=40019 + os.getpid() % 1000 * 20,
        media_timeout=0.3,
        timeout_check_interval=0.05,
    )
    relay = RelayThread(settings)
    try:
        session = allocate(relay)
        deadline = time.monotonic() + 3
        while not relay.events and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert relay.events == [
            MediaTimedOut(session.call_id, relay.events[0].idle_for)
        ]
        assert relay.events[0].idle_for >= 0.3
    finally:
        relay.stop()


def test_close_releases_ports_for_reuse(relay: RelayThread) -> None:
    session = allocate(relay)
    before = relay.relay._allocator.available
    relay.call(session.close)
    relay.call(session.close)

    assert relay.relay._allocator.available == before + 2
    assert session.call_id not in relay.relay.sessions


def eventually(condition) -> bool:
    deadline = time.monotonic() + 2
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def receiver_report(ssrc: int, lost: int) -> bytes:
    block = RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=16,
        packets_lost=lost,
        highest_sequence=100,
        jitter=40,
        lsr=0,
        dlsr=0,
    )
    return bytes(RtcpRrPacket(ssrc=0x3333, reports=[block]))


def test_c22_rtcp_mux_refused_uses_separate_rtcp_port(relay: RelayThread) -> None:
    # The SBC offered a=rtcp-mux, the answer lacked it (RFC 5761 §5.1.1):
    # RTCP goes to the fallback a=rtcp port, and the RTP port carries RTP only.
    session = allocate(relay)
    caller_rtp, caller_rtcp = Peer(), Peer()
    callee_rtp, callee_rtcp = Peer(), Peer()
    to_a = connect(
        relay, session, Side.A, caller_rtp, rtcp_port=caller_rtcp.port, rtcp_mux=False
    )
    connect(relay, session, Side.B, callee_rtp, rtcp_port=callee_rtcp.port)
    a = session.local(Side.A)

    report = receiver_report(ssrc=0x4444, lost=1)
    caller_rtcp.send(report, (a.host, a.rtcp_port))
    assert callee_rtcp.receive() == report
    # An RTP packet whose type collides with RTCP's range is still RTP here.
    collision = rtp_packet(9, payload_type=72)
    caller_rtp.send(collision, to_a)
    assert callee_rtp.receive() == collision
    assert callee_rtcp.nothing_arrives()


def test_c19_hold_with_zero_address_then_unhold(relay: RelayThread) -> None:
    session = allocate(relay)
    caller, callee = Peer(), Peer()
    to_a = connect(relay, session, Side.A, caller)
    to_b = connect(relay, session, Side.B, callee)
    caller.send(rtp_packet(1), to_a)
    assert callee.receive() == rtp_packet(1)

    # The caller holds with c=IN IP4 0.0.0.0: nothing is sent toward it, and
    # its music on hold still reaches the callee.
    relay.call(lambda: session.update_leg(Side.A, RemoteMedia("0.0.0.0", caller.port)))
    callee.send(rtp_packet(2, ssrc=5), to_b)
    assert caller.nothing_arrives()
    caller.send(rtp_packet(2), to_a)
    assert callee.receive() == rtp_packet(2)
    drops = session.counters(Side.A).drops
    assert drops[MediaDropReason.NO_DESTINATION] == 1

    # Un-hold with the real address: media flows again both ways.
    connect(relay, session, Side.A, caller)
    callee.send(rtp_packet(3, ssrc=5), to_b)
    assert caller.receive() == rtp_packet(3, ssrc=5)
    caller.send(rtp_packet(3), to_a)
    assert callee.receive() == rtp_packet(3)


def test_ports_exhausted_on_b_leg_releases_a_leg_pair() -> None:
    low = 41000 + os.getpid() % 1000 * 2
    relay = RelayThread(MediaSettings(port_min=low, port_max=low + 1))
    try:
        with pytest.raises(PortsExhausted):
            allocate(relay)
        assert relay.relay._allocator.available == 1
        assert relay.relay.sessions == {}
        # The pair is free again: a one-leg range can be bound by anyone.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", low + (low & 1)))
        probe.close()
    finally:
        relay.stop()


PRELOAD_PROBE = """
import asyncio, sys, time, uvloop
from sbc.media import MediaRelay, MediaSettings
assert "aiortc" not in sys.modules, "imported at start-up"

async def main():
    low = int(sys.argv[1])
    relay = MediaRelay(MediaSettings(port_min=low, port_max=low + 9))
    await relay.allocate("probe", "127.0.0.1", "127.0.0.1")
    deadline = time.monotonic() + 20
    while "aiortc.rtp" not in sys.modules and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await relay.close()
    print("aiortc.rtp" in sys.modules)

uvloop.run(main())
"""


def test_rtcp_parser_not_imported_at_start_but_preloaded_with_first_call() -> None:
    low = 42000 + os.getpid() % 1000 * 10
    result = subprocess.run(
        [sys.executable, "-c", PRELOAD_PROBE, str(low)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_two_streams_relay_independently(relay: RelayThread) -> None:
    # Audio and video m-lines: each has its own pairs on both legs.
    session = relay.run(relay.relay.allocate("av-call", "127.0.0.1", "127.0.0.1", 2))
    peers = [(Peer(), Peer()) for _ in range(2)]
    for index, (caller, callee) in enumerate(peers):
        for side, peer in ((Side.A, caller), (Side.B, callee)):
            remote = RemoteMedia(peer.host, peer.port)
            relay.call(lambda s=side, r=remote, i=index: session.update_leg(s, r, i))

    for index, (caller, callee) in enumerate(peers):
        local = session.local(Side.A, index)
        caller.send(rtp_packet(index, ssrc=100 + index), (local.host, local.rtp_port))
        assert callee.receive() == rtp_packet(index, ssrc=100 + index)
    with pytest.raises(UnknownLeg):
        session.local(Side.A, 2)
    with pytest.raises(ValueError):
        relay.run(relay.relay.allocate("no-streams", "127.0.0.1", "127.0.0.1", 0))
