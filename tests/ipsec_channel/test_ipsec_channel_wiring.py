"""From the configuration to the channel: which peers and legs go inside."""

from __future__ import annotations

import asyncio
import os

import pytest
from channel_helpers import (
    LOOPBACK,
    connect_planes,
    relay_for,
    run,
    sdp,
    worker_port_range,
)

from ipsec.esp import Mode
from sbc.b2bua.call import Side as CallSide
from sbc.b2bua.media import MediaAnchor
from sbc.config.loader import parse_config
from sbc.io.ipsec_channel import ipsec_peers
from sbc.io.media_glue import ArrivalMemo, LegSetup, MediaFirstUser, leg_homes
from sbc.media import MediaRelay, MediaSettings, Side
from sbc.sdp import LegPolicy, SessionDescription
from sbc.sip.errors import SipError
from sbc.sip.parser import parse_message
from sbc.sip.timers import TimerValues
from sbc.sip.transaction import TransactionLayer

CONFIG = """\
ipsec:
  node: sbc-a
  address: 192.0.2.1
listeners:
  - name: sec
    transport: udp
    address: 192.0.2.1
    ipsec: true
  - name: plain
    transport: udp
    address: 127.0.0.1
    port: 5070
ipsec_profiles:
  - name: strong
    psk: s3cret
trunks:
  - name: carrier
    kind: carrier
    listeners: [sec]
    targets:
      - host: 198.51.100.7
    ipsec_profile: strong
  - name: pbx
    kind: pbx
    listeners: [plain]
    targets:
      - host: 127.0.0.1
        port: 5080
media:
  address: 127.0.0.1
"""


def test_protected_trunk_targets_pinned_to_its_ipsec_listener():
    config = parse_config(CONFIG)

    assert ipsec_peers(config) == {"198.51.100.7": ("192.0.2.1", 5060)}


def test_protected_trunk_b_leg_lives_inside_others_on_sockets():
    config = parse_config(CONFIG)
    plane = object()

    home = leg_homes(config, "127.0.0.1", plane)  # type: ignore[arg-type]

    assert home("carrier") == ("192.0.2.1", plane)
    assert home("pbx") == ("127.0.0.1", None)
    with pytest.raises(ValueError, match="carrier is protected"):
        leg_homes(config, "127.0.0.1", None)


def offered_address(body: bytes) -> tuple[str, int]:
    description = SessionDescription.parse(body)
    media = description.media[0]
    connection = media.connection or description.connection
    assert connection is not None
    return connection.address, media.port


def test_b_leg_offer_follows_its_trunk_inside_ipsec_and_back():
    # Failover from a protected trunk to one in clear: each offer names the
    # relay where that trunk's media lives.
    async def scenario():
        planes = connect_planes(Mode.TUNNEL)
        relay = relay_for(planes)
        session = await relay.allocate("call-3", LOOPBACK, LOOPBACK)
        on_sockets = session.local(Side.B)
        homes = {"carrier": (planes.sbc_address, planes.sbc), "pbx": (LOOPBACK, None)}
        anchor = MediaAnchor(os.urandom, leg_home=homes.__getitem__)
        anchor.prepare("call-3", session, (LegPolicy(), LegPolicy()))
        offer = sdp("192.0.2.50", 6000)

        anchor.route_chosen("call-3", CallSide.B, "carrier")
        moved = session.local(Side.B)
        inside = anchor.rewrite("call-3", CallSide.A, offer, "application/sdp")
        anchor.route_chosen("call-3", CallSide.B, "pbx")
        clear = anchor.rewrite("call-3", CallSide.A, offer, "application/sdp")

        assert moved.host == planes.sbc_address
        assert offered_address(inside) == (planes.sbc_address, moved.rtp_port)
        assert offered_address(clear) == (LOOPBACK, on_sockets.rtp_port)
        assert session.channels == (None, None)
        await relay.close()
        planes.close()

    run(scenario())


def test_b_leg_without_ports_inside_refuses_the_trunk_with_503():
    async def scenario():
        planes = connect_planes(Mode.TUNNEL)
        low, _ = worker_port_range()
        # Two pairs: both taken by the sockets, none left for the channel.
        relay = MediaRelay(
            MediaSettings(port_min=low, port_max=low + 3), data_plane=planes.sbc
        )
        session = await relay.allocate("call-4", LOOPBACK, LOOPBACK)
        home = (planes.sbc_address, planes.sbc)
        anchor = MediaAnchor(os.urandom, leg_home=lambda trunk: home)
        anchor.prepare("call-4", session, (LegPolicy(), LegPolicy()))

        with pytest.raises(SipError) as refused:
            anchor.route_chosen("call-4", CallSide.B, "carrier")
        assert refused.value.status_code == 503
        assert session.channels == (None, None)
        await relay.close()
        planes.close()

    run(scenario())


INVITE = (
    b"INVITE sip:+15550100@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;received=198.51.100.7;branch=z9hG4bKw1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+15550101@carrier.test>;tag=c1\r\n"
    b"To: <sip:+15550100@sbc.test>\r\n"
    b"Call-ID: wiring-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_call_on_ipsec_listener_without_data_plane_refused_503():
    # The relay cannot carry the A-leg inside IPsec: the call is refused
    # (503, try another SBC) rather than held or relayed in clear.
    async def scenario():
        loop = asyncio.get_running_loop()
        layer = TransactionLayer(TimerValues())
        request = parse_message(INVITE)
        layer.receive_request(request, ("198.51.100.7", 5060), "UDP", loop.time())
        event = layer.next_event()
        relay = relay_for_nothing()
        policies = (LegPolicy(), LegPolicy())
        user = MediaFirstUser(
            None, layer, MediaAnchor(os.urandom), relay,  # type: ignore[arg-type]
            lambda name: LegSetup((LOOPBACK, LOOPBACK), policies, (True, False)),
            ArrivalMemo(lambda event: "sec"), wake=lambda: None,
        )  # fmt: skip

        user.handle_event(event, loop.time())
        await asyncio.sleep(0.1)

        sent = [t.data.split(b"\r\n", 1)[0] for t in layer.datagrams_to_send()]
        assert b"SIP/2.0 503 Service Unavailable" in sent
        assert relay.sessions == {}

    run(scenario())


def relay_for_nothing() -> MediaRelay:
    low, high = worker_port_range()
    return MediaRelay(MediaSettings(port_min=low, port_max=high))
