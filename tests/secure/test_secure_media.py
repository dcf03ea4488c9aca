"""A call's media across a protected trunk whose SAs go away.

Node A's relay carries the call's B-leg inside the trunk's SAs (A's data
plane, from a real SecureTrunks runtime); the B side's RTP comes from the
peer runtime's channel. When the peer goes away the SAs go with it, but the
relay keeps the session: back before ``media_timeout``, RTP flows again
through the new SAs and nothing reports the call silent; away longer, the
relay reports it (``MediaTimedOut``, on which the anchor ends the call).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ipsec_channel.channel_helpers import (
    LOOPBACK,
    ChannelPeer,
    RtpPeer,
    free_udp_port,
    rtp_packet,
    worker_port_range,
)
from secure_lab import Node, is_up, node_config, run, trunk_pair, until

from sbc.media import (
    MediaEvent,
    MediaRelay,
    MediaSession,
    MediaSettings,
    MediaTimedOut,
    RemoteMedia,
    Side,
)

MEDIA_TIMEOUT = 3.0


@dataclass
class Call:
    session: MediaSession
    clear: RtpPeer
    """The A-leg's peer, on a kernel socket."""
    port: int
    """The B-leg peer's RTP port on the peer node's channel."""
    events: list[MediaEvent]

    def rtp_from(self, peer: Node, sequence: int) -> None:
        """One RTP packet from the peer node, through its SAs."""
        local = self.session.local(Side.B)
        channel = ChannelPeer(peer.secure.data_plane, peer.address, self.port)
        channel.send(rtp_packet(sequence, b"v" * 160), (local.host, local.rtp_port))

    async def heard(self, sequence: int) -> None:
        while True:
            data, _ = await self.clear.receive()
            if int.from_bytes(data[2:4], "big") == sequence:
                return


@contextlib.asynccontextmanager
async def call_through(a: Node, b: Node) -> AsyncIterator[Call]:
    low, high = worker_port_range()
    settings = MediaSettings(
        port_min=low, port_max=high, media_timeout=MEDIA_TIMEOUT,
        timeout_check_interval=0.1,
    )  # fmt: skip
    events: list[MediaEvent] = []
    relay = MediaRelay(settings, events.append, data_plane=a.secure.data_plane)
    session = await relay.allocate(
        "secure-call", LOOPBACK, a.address, ipsec=(False, True)
    )
    clear, port = await RtpPeer.open(), free_udp_port()
    session.update_leg(Side.A, RemoteMedia(LOOPBACK, clear.address[1]))
    session.update_leg(Side.B, RemoteMedia(b.address, port))
    try:
        yield Call(session, clear, port, events)
    finally:
        clear.close()
        await relay.close()


async def peer_again(a: Node, b: Node) -> Node:
    """The peer node started afresh on its address; A sets the SAs up again."""
    again = Node(b.address)
    await again.secure.start(node_config(b.address, {"to-a": a.address}, start="none"))
    await until(lambda: is_up(a, "to-b"), timeout=10)
    return again


@contextlib.asynccontextmanager
async def call_under_way() -> AsyncIterator[tuple[Node, Node, Call]]:
    """Two nodes and a call whose first RTP from B reached A's clear side."""
    async with trunk_pair() as (a, b), call_through(a, b) as call:
        await until(lambda: is_up(a, "to-b"))
        call.rtp_from(b, 1)
        await call.heard(1)
        yield a, b, call


def test_call_outlives_a_short_sa_loss_and_its_media_resumes():
    async def scenario():
        async with call_under_way() as (a, b, call):
            await b.secure.stop()
            await until(lambda: "to-b" in a.secure.unprotected)
            again = await peer_again(a, b)
            try:
                call.rtp_from(again, 2)
                await call.heard(2)
            finally:
                await again.secure.stop()

            assert call.events == []
            assert not call.session.closed

    run(scenario())


def test_call_silent_past_media_timeout_is_reported():
    async def scenario():
        async with call_under_way() as (a, b, call):
            await b.secure.stop()
            await until(lambda: call.events, timeout=MEDIA_TIMEOUT + 3)

            [event] = call.events
            assert isinstance(event, MediaTimedOut)
            assert event.idle_for >= MEDIA_TIMEOUT
            assert "to-b" in a.secure.unprotected

    run(scenario())
