"""From the configuration to the channel: which peers and legs go inside."""

from __future__ import annotations

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
from sbc.io.media_glue import leg_homes
from sbc.media import MediaRelay, MediaSettings, Side
from sbc.sdp import LegPolicy, SessionDescription
from sbc.sip.errors import SipError

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
