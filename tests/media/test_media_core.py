"""The sans-IO core with a fake clock: latching, statistics, timeouts."""

from __future__ import annotations

import random

import pytest
from media_helpers import rtp_packet

from sbc.media import (
    MediaDropReason,
    MediaSettings,
    MediaTimedOut,
    RemoteMedia,
    SessionCore,
    Side,
    StreamCore,
)
from sbc.media.core import RTCP_SOCKET, RTP_SOCKET
from sbc.media.counters import SAMPLE_EVERY
from sbc.media.errors import BadSrtpParameters
from sbc.media.srtp import SrtpParameters, SrtpSuite

CALLER = ("192.0.2.10", 40000)
CALLEE = ("2001:db8::20", 50000)


def connected_stream(now: float = 0.0, **options) -> StreamCore:
    stream = StreamCore(now)
    stream.update_leg(Side.A, RemoteMedia(*CALLER, **options))
    stream.update_leg(Side.B, RemoteMedia(*CALLEE))
    return stream


def test_forward_goes_to_other_leg_signalled_address() -> None:
    stream = connected_stream()

    assert stream.rtp_received(Side.A, rtp_packet(1), CALLER, 0.0) == (
        rtp_packet(1),
        CALLEE,
        RTP_SOCKET,
    )
    # IPv6 socket addresses carry flow info and scope; only host and port count.
    from_callee = (*CALLEE, 0, 0)
    assert stream.rtp_received(Side.B, rtp_packet(1), from_callee, 0.0) is not None


def test_rtcp_goes_to_next_port_without_a_rtcp_attribute() -> None:
    stream = connected_stream()
    report = bytes([0x80, 201, 0, 1]) + bytes(4)

    assert stream.rtcp_received(Side.A, report, (CALLER[0], CALLER[1] + 1), 0.0) == (
        report,
        (CALLEE[0], CALLEE[1] + 1),
        RTCP_SOCKET,
    )


def test_latching_refuses_other_port_on_signalled_host() -> None:
    stream = connected_stream()

    assert stream.rtp_received(Side.A, rtp_packet(1), (CALLER[0], 40002), 0.0) is None
    assert stream.legs[Side.A].counters.drops[MediaDropReason.WRONG_SOURCE] == 1


def test_no_destination_until_other_leg_signalled() -> None:
    stream = StreamCore(0.0)
    stream.update_leg(Side.A, RemoteMedia(*CALLER))

    assert stream.rtp_received(Side.A, rtp_packet(1), CALLER, 0.0) is None
    assert stream.legs[Side.B].counters.drops[MediaDropReason.NO_DESTINATION] == 1


@pytest.mark.parametrize("seed", range(5))
def test_loss_counted_from_sequence_gaps_random(seed: int) -> None:
    rng = random.Random(seed)
    stream = connected_stream()
    start = rng.randrange(0x10000)
    # Cross the 16-bit wrap on purpose (RFC 3550 A.1 cycles).
    sent = [start + n for n in range(0x10000 - start + 300)]
    dropped = set(rng.sample(sent[1:-1], 40))

    for n, seq in enumerate(sent):
        if seq not in dropped:
            stream.rtp_received(Side.A, rtp_packet(seq), CALLER, n * 0.02)

    statistics = stream.legs[Side.A].counters.statistics
    assert statistics.lost == len(dropped)
    assert statistics.expected == len(sent)


def test_jitter_zero_when_arrival_matches_timestamps() -> None:
    stream = connected_stream()
    for seq in range(100):
        stream.rtp_received(Side.A, rtp_packet(seq), CALLER, 5.0 + seq * 0.02)

    assert stream.legs[Side.A].counters.statistics.jitter == pytest.approx(0, abs=1)


def test_jitter_follows_rfc3550_estimator_on_sampled_pairs() -> None:
    rng = random.Random(7)
    stream = connected_stream(payload_types={"PCMU/8000": 0})
    delays = [rng.uniform(0, 0.03) for _ in range(400)]

    # The estimator of RFC 3550 §6.4.1, computed from its definition, fed
    # the pairs the relay reads: the 8th packet and the one before, etc.
    expected, previous = 0.0, 0
    for seq, delay in enumerate(delays):
        arrival = 1.0 + seq * 0.02 + delay
        stream.rtp_received(Side.A, rtp_packet(seq), CALLER, arrival)
        transit = int(arrival * 8000) - seq * 160
        if (seq + 1) % SAMPLE_EVERY == 0:
            expected += (abs(transit - previous) - expected) / 16
        previous = transit

    assert stream.legs[Side.A].counters.statistics.jitter == pytest.approx(expected)
    assert stream.legs[Side.A].counters.snapshot()["jitter_ms"] == pytest.approx(
        expected / 8
    )


def test_sampled_jitter_settles_at_the_mean_transit_difference() -> None:
    rng = random.Random(11)
    stream = connected_stream(payload_types={"PCMU/8000": 0})
    transits = []
    for seq in range(6000):
        arrival = 1.0 + seq * 0.02 + rng.uniform(0, 0.03)
        stream.rtp_received(Side.A, rtp_packet(seq), CALLER, arrival)
        transits.append(int(arrival * 8000) - seq * 160)

    # What the full estimator tracks: the mean |D| over every pair (§6.4.1).
    steps = [abs(b - a) for a, b in zip(transits, transits[1:], strict=False)]
    mean = sum(steps) / len(steps)
    assert mean == pytest.approx(80, rel=0.1)
    jitter = stream.legs[Side.A].counters.statistics.jitter
    assert jitter == pytest.approx(mean, rel=0.3)


def test_new_ssrc_restarts_loss_counting_between_samples() -> None:
    stream = connected_stream()
    for seq in range(13):
        stream.rtp_received(Side.A, rtp_packet(seq), CALLER, seq * 0.02)
    # A new source mid-way between two sampled packets, from seq 500,
    # missing 503 and 507.
    for seq in [500, 501, 502, 504, 505, 506, 508]:
        packet = rtp_packet(seq, ssrc=0xC0FFEE)
        stream.rtp_received(Side.A, packet, CALLER, seq * 0.02)

    statistics = stream.legs[Side.A].counters.statistics
    assert statistics.ssrc == 0xC0FFEE
    assert statistics.received == 7
    assert statistics.expected == 9
    assert statistics.lost == 2


def test_jitter_stays_zero_across_timestamp_wrap() -> None:
    stream = connected_stream()
    # Timestamps (seq * 160) wrap 32 bits at seq 26,843,546, mid-stream.
    first = 26_843_546 - 300
    for n in range(600):
        seq = first + n
        stream.rtp_received(Side.A, rtp_packet(seq), CALLER, 7.0 + n * 0.02)

    statistics = stream.legs[Side.A].counters.statistics
    assert statistics.jitter == pytest.approx(0, abs=1)
    assert statistics.lost == 0
    assert statistics.expected == 600


def test_media_timeout_with_fake_clock_reported_once() -> None:
    session = SessionCore("c1@example.com", 2, now=100.0, media_timeout=30.0)
    for side in Side:
        for stream in session.streams:
            stream.update_leg(
                side, RemoteMedia(*(CALLER if side == Side.A else CALLEE))
            )

    session.streams[1].rtp_received(Side.A, rtp_packet(1), CALLER, 110.0)
    assert session.poll_timeout(139.9) is None
    event = session.poll_timeout(140.0)
    assert event == MediaTimedOut("c1@example.com", 30.0)
    assert session.poll_timeout(200.0) is None


def test_media_timeout_disabled_then_restarted() -> None:
    session = SessionCore("c2@example.com", 1, now=0.0, media_timeout=10.0)

    session.set_media_timeout(None, now=5.0)
    assert session.poll_timeout(1000.0) is None
    session.set_media_timeout(10.0, now=1000.0)
    assert session.poll_timeout(1009.0) is None
    assert session.poll_timeout(1010.0) == MediaTimedOut("c2@example.com", 10.0)


def test_dropped_packets_do_not_refresh_media_timeout() -> None:
    session = SessionCore("c3@example.com", 1, now=0.0, media_timeout=10.0)
    stream = session.streams[0]
    stream.update_leg(Side.A, RemoteMedia(*CALLER))
    stream.update_leg(Side.B, RemoteMedia(*CALLEE))

    for t in range(1, 10):
        stream.rtp_received(Side.A, rtp_packet(t), ("198.51.100.1", 9), float(t))
        stream.rtp_received(Side.A, b"\x80\x00", CALLER, float(t))

    assert session.poll_timeout(10.0) is not None


@pytest.mark.parametrize("seed", range(3))
def test_random_datagrams_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    suite = SrtpSuite.AEAD_AES_128_GCM
    keys = SrtpParameters(suite, bytes(28), bytes(range(28)))
    stream = connected_stream(srtp=keys, rtcp_mux=True)

    for _ in range(2000):
        datagram = rng.randbytes(rng.randrange(0, 80))
        if datagram and rng.random() < 0.5:
            datagram = bytes([0x80]) + datagram[1:]
        assert stream.rtp_received(Side.A, datagram, CALLER, 0.0) is None
        stream.rtcp_received(Side.A, datagram, CALLER, 0.0)
        stream.rtp_received(Side.B, datagram, CALLEE, 0.0)

    # Every datagram A sent was dropped on the way in; what B sent was
    # dropped on B, went out to A, or failed SRTP protection toward A.
    a, b = stream.legs
    protect_failures = a.counters.drops.pop(MediaDropReason.SRTP_PROTECT_FAILED, 0)
    assert sum(a.counters.drops.values()) == 4000
    b_drops = sum(b.counters.drops.values())
    assert b_drops + protect_failures + a.counters.packets_sent == 2000


def test_srtp_key_of_wrong_length_refused() -> None:
    with pytest.raises(BadSrtpParameters):
        SrtpParameters(SrtpSuite.AEAD_AES_256_GCM, bytes(30), bytes(30))


def test_srtp_keys_never_in_repr() -> None:
    key = bytes(range(30))
    keys = SrtpParameters(SrtpSuite.AES_CM_128_HMAC_SHA1_80, key, key)

    assert key.hex() not in repr(keys) and repr(key) not in repr(keys)
    assert repr(key) not in repr(RemoteMedia(*CALLER, srtp=keys))


def test_settings_refuse_empty_port_range() -> None:
    with pytest.raises(ValueError):
        MediaSettings(port_min=30001, port_max=30001)


def test_latch_any_source_keeps_nat_binding_across_reinvite() -> None:
    stream = StreamCore(0.0, latch_any_source=True)
    stream.update_leg(Side.A, RemoteMedia("10.0.0.5", 4000))
    stream.update_leg(Side.B, RemoteMedia(*CALLEE))
    nat_binding = ("198.51.100.9", 61000)
    stream.rtp_received(Side.A, rtp_packet(1), nat_binding, 0.0)

    # A re-INVITE names another private port; the NAT binding still answers.
    stream.update_leg(Side.A, RemoteMedia("10.0.0.5", 4002))
    forward = stream.rtp_received(Side.B, rtp_packet(1), CALLEE, 0.1)
    assert forward is not None and forward[1] == nat_binding

    # A new binding (the NAT rebound after the move) takes over.
    rebound = ("198.51.100.9", 62000)
    assert stream.rtp_received(Side.A, rtp_packet(2), rebound, 0.2) is not None
    forward = stream.rtp_received(Side.B, rtp_packet(2), CALLEE, 0.3)
    assert forward is not None and forward[1] == rebound
