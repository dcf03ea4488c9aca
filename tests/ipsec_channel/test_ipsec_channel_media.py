"""Relay legs inside IPsec: RTP and RTCP of a protected leg through the channel."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pylibsrtp
import pytest
from channel_helpers import (
    LOOPBACK,
    PATHS,
    TUNNEL_INNER,
    ChannelPeer,
    Planes,
    RtpPeer,
    connect_planes,
    free_udp_port,
    receiver_report,
    relay_for,
    rtp_packet,
    run,
    worker_port_range,
)

from ipsec.esp import Mode
from sbc.media import (
    MediaDropReason,
    MediaEvent,
    MediaRelay,
    MediaSession,
    MediaSettings,
    MediaTimedOut,
    RemoteMedia,
    Side,
    SrtpParameters,
    SrtpSuite,
)

QUIET = 0.3


@dataclass
class Call:
    planes: Planes
    relay: MediaRelay
    session: MediaSession
    clear: RtpPeer
    """The A-leg's peer, on a kernel socket."""
    clear_rtcp: RtpPeer
    protected: ChannelPeer
    """The B-leg's peer, on the far data plane's channel."""
    protected_rtcp: ChannelPeer
    events: list[MediaEvent]

    def a_port(self) -> tuple[str, int]:
        local = self.session.local(Side.A)
        return local.host, local.rtp_port

    def b_port(self, rtcp: bool = False) -> tuple[str, int]:
        local = self.session.local(Side.B)
        return local.host, local.rtcp_port if rtcp else local.rtp_port


@contextlib.asynccontextmanager
async def protected_call(
    mode: Mode = Mode.TUNNEL, inner: tuple[str, str] = TUNNEL_INNER, **settings: float
) -> AsyncIterator[Call]:
    """A relay session whose A-leg is clear and whose B-leg is inside IPsec,
    with both legs' remote halves applied."""
    planes = connect_planes(mode, inner=inner)
    events: list[MediaEvent] = []
    relay = relay_for(planes, events.append, **settings)
    session = await relay.allocate(
        "call-1", LOOPBACK, planes.sbc_address, ipsec=(False, True)
    )
    clear, clear_rtcp = await RtpPeer.open(), await RtpPeer.open()
    port = free_udp_port()
    protected = ChannelPeer(planes.peer, planes.peer_address, port)
    protected_rtcp = ChannelPeer(planes.peer, planes.peer_address, port + 1)
    session.update_leg(
        Side.A, RemoteMedia(LOOPBACK, clear.address[1], clear_rtcp.address[1])
    )
    session.update_leg(Side.B, RemoteMedia(planes.peer_address, port))
    try:
        yield Call(
            planes, relay, session, clear, clear_rtcp, protected, protected_rtcp, events
        )
    finally:
        clear.close()
        clear_rtcp.close()
        await relay.close()
        planes.close()


@pytest.mark.parametrize(("mode", "inner"), PATHS)
def test_rtp_relayed_both_ways_through_the_channel(mode, inner):
    async def scenario():
        async with protected_call(mode, inner) as call:
            outbound = [rtp_packet(n, bytes([n]) * 160) for n in range(1, 6)]
            inbound = [rtp_packet(n, bytes([n]) * 160, ssrc=0x55) for n in range(1, 6)]

            for packet in outbound:
                call.clear.send(packet, call.a_port())
                data, source = await call.protected.receive()
                assert data == packet
                assert source == call.b_port()
            for packet in inbound:
                call.protected.send(packet, call.b_port())
                data, source = await call.clear.receive()
                assert data == packet
                assert source == call.a_port()

            b = call.session.counters(Side.B)
            assert (b.packets_sent, b.packets_received) == (5, 5)
            assert call.session.local(Side.B).host == call.planes.sbc_address
            assert call.planes.sbc.counters(call.planes.to_peer.spi).packets == 5
            assert call.planes.sbc.counters(call.planes.to_sbc.spi).packets == 5

    run(scenario())


def test_rtcp_over_the_channel_relayed_and_its_report_read():
    async def scenario():
        async with protected_call() as call:
            report = receiver_report(0x55, 0x11223344, fraction_lost=64)

            call.protected_rtcp.send(report, call.b_port(rtcp=True))
            data, _ = await call.clear_rtcp.receive()

            assert data == report
            b = call.session.counters(Side.B)
            assert b.rtcp_received == 1
            assert b.reported_fraction_lost == 0.25

    run(scenario())


def test_latching_drops_channel_packets_from_another_inner_port():
    async def scenario():
        async with protected_call() as call:
            stranger = ChannelPeer(
                call.planes.peer, call.planes.peer_address, free_udp_port()
            )

            stranger.send(rtp_packet(1, b"x" * 160), call.b_port())
            await asyncio.sleep(QUIET)

            assert call.clear.queue.empty()
            drops = call.session.counters(Side.B).drops
            assert drops[MediaDropReason.WRONG_SOURCE] == 1

    run(scenario())


def test_sas_removed_relayed_packet_dropped_and_counted_never_sent_clear():
    async def scenario():
        async with protected_call() as call:
            call.planes.remove_sas()

            call.clear.send(rtp_packet(1, b"y" * 160), call.a_port())
            await asyncio.sleep(QUIET)

            assert call.protected.queue.empty()
            b = call.session.counters(Side.B)
            assert b.drops[MediaDropReason.SEND_FAILED] == 1
            channel = call.planes.sbc.stats()["paths"]["channel"]
            assert channel["drops"] == {"no_sa": 1}
            assert channel["packets_out"] == 0

    run(scenario())


def test_media_timeout_counts_rtp_heard_only_inside_ipsec():
    async def scenario():
        async with protected_call(
            media_timeout=1.0, timeout_check_interval=0.1
        ) as call:
            # RTP every 0.1 s from the protected side keeps the call alive
            # for twice the timeout (a loaded machine may stall a few beats).
            for n in range(20):
                call.protected.send(rtp_packet(n, b"z" * 160), call.b_port())
                await asyncio.sleep(0.1)
            assert call.events == []

            for _ in range(50):
                if call.events:
                    break
                await asyncio.sleep(0.1)
            assert [type(event) for event in call.events] == [MediaTimedOut]

    run(scenario())


def test_closed_session_unbinds_its_channel_ports():
    async def scenario():
        async with protected_call() as call:
            rtp, rtcp = call.b_port(), call.b_port(rtcp=True)

            call.session.close()
            call.protected.send(rtp_packet(1, b"w" * 160), rtp)
            call.protected_rtcp.send(receiver_report(1, 2, 0), rtcp)
            await asyncio.sleep(QUIET)

            assert call.clear.queue.empty()
            drops = call.planes.sbc.stats()["paths"]["channel"]["drops"]
            assert drops == {"no_handler": 2}

    run(scenario())


def test_ipsec_leg_without_a_data_plane_refused():
    async def scenario():
        low, high = worker_port_range()
        relay = MediaRelay(MediaSettings(port_min=low, port_max=high))

        with pytest.raises(ValueError, match="data plane"):
            await relay.allocate("c", LOOPBACK, "198.51.100.1", ipsec=(False, True))
        assert relay.sessions == {}

    run(scenario())


def test_b_leg_moved_inside_ipsec_and_back_to_its_sockets():
    # Routing picks the B-leg's trunk after its ports were bound: a
    # protected trunk moves the leg inside, failover to a clear one back.
    async def scenario():
        planes = connect_planes(Mode.TUNNEL)
        relay = relay_for(planes)
        session = await relay.allocate("call-2", LOOPBACK, LOOPBACK)
        on_sockets = session.local(Side.B)
        clear_a, clear_b = await RtpPeer.open(), await RtpPeer.open()
        far = ChannelPeer(planes.peer, planes.peer_address, free_udp_port())
        a_port = (LOOPBACK, session.local(Side.A).rtp_port)
        session.update_leg(Side.A, RemoteMedia(LOOPBACK, clear_a.address[1]))

        session.move_leg(Side.B, planes.sbc_address, planes.sbc)
        inside = session.local(Side.B)
        session.update_leg(Side.B, RemoteMedia(*far.address))
        clear_a.send(rtp_packet(1, b"i" * 160), a_port)
        assert (await far.receive())[1] == (inside.host, inside.rtp_port)
        far.send(rtp_packet(1, b"o" * 160), (inside.host, inside.rtp_port))
        assert (await clear_a.receive())[1] == a_port
        # The sockets set aside read nothing onward.
        clear_b.send(rtp_packet(2, b"s" * 160), (LOOPBACK, on_sockets.rtp_port))
        await asyncio.sleep(QUIET)
        assert clear_a.queue.empty()
        assert session.counters(Side.B).drops[MediaDropReason.WRONG_SOURCE] == 1

        session.move_leg(Side.B, LOOPBACK, None)
        assert session.local(Side.B) == on_sockets
        session.update_leg(Side.B, RemoteMedia(*clear_b.address))
        clear_a.send(rtp_packet(3, b"c" * 160), a_port)
        assert (await clear_b.receive())[1] == (LOOPBACK, on_sockets.rtp_port)
        far.send(rtp_packet(4, b"l" * 160), (inside.host, inside.rtp_port))
        await asyncio.sleep(QUIET)
        assert planes.sbc.stats()["paths"]["channel"]["drops"] == {"no_handler": 1}

        with pytest.raises(ValueError, match="no sockets"):
            session.move_leg(Side.B, "127.0.0.2", None)
        session.close()
        low, high = worker_port_range()
        assert relay._allocator.available == (high - low + 1) // 2
        clear_a.close()
        clear_b.close()
        planes.close()

    run(scenario())


def test_srtp_caller_bridged_to_plain_rtp_inside_ipsec():
    # SDES on the clear leg, plain RTP inside the SA: the relay converts.
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80
    caller_key, relay_key = os.urandom(30), os.urandom(30)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    caller_out = pylibsrtp.Session(
        pylibsrtp.Policy(caller_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile)
    )
    caller_in = pylibsrtp.Session(
        pylibsrtp.Policy(relay_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile)
    )

    async def scenario():
        async with protected_call() as call:
            keys = SrtpParameters(suite, send_key=relay_key, receive_key=caller_key)
            remote = RemoteMedia(LOOPBACK, call.clear.address[1], srtp=keys)
            call.session.update_leg(Side.A, remote)

            for n in range(10):
                plain = rtp_packet(n, os.urandom(160))
                call.clear.send(caller_out.protect(plain), call.a_port())
                assert (await call.protected.receive())[0] == plain
                reply = rtp_packet(n, os.urandom(160), ssrc=0x77)
                call.protected.send(reply, call.b_port())
                assert caller_in.unprotect((await call.clear.receive())[0]) == reply

    run(scenario())
