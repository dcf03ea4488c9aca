"""The rewriter's plan driving the real media relay (sbc.media) over loopback.

Phone A speaks plain RTP; phone B speaks SRTP with the keys read from the
SDP the SBC sent it, through pylibsrtp. Packets must cross with each leg's
own payload types, before hold, during a sendonly hold and after resume
(C19, C20).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pylibsrtp

from sbc.media import (
    MediaRelay,
    MediaSettings,
    RemoteMedia,
    Side,
    SrtpParameters,
    SrtpSuite,
)
from sbc.sdp import (
    Leg,
    LegMedia,
    LegPolicy,
    RelayPorts,
    SessionDescription,
    StreamPorts,
    anchor_answer,
    anchor_offer,
)

from .peers import answer_like_a_phone

SUITE = "AES_CM_128_HMAC_SHA1_80"
PHONE_B_KEY = bytes(range(30))  # what answer_like_a_phone puts in its a=crypto
WAIT = 2.0


def port_range() -> tuple[int, int]:
    # Per process, apart from tests/media's range, for pytest-xdist workers.
    base = 50000 + (os.getpid() % 100) * 100
    return base, base + 99


def rtp(
    payload_type: int, sequence: int, ssrc: int, payload: bytes = b"\x00" * 20
) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, payload_type, sequence, sequence * 160, ssrc)
        + payload
    )


def offer_from_a(port: int, direction: str, *, tail: bytes = b"\r\n") -> bytes:
    return (
        b"v=0\r\no=a 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        + f"m=audio {port} RTP/AVP 8 101\r\n".encode()
        + b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        + f"a={direction}".encode()
        + tail
    )


def remote_media(leg: LegMedia) -> RemoteMedia:
    assert leg.remote is not None
    srtp = None
    if leg.srtp is not None:
        srtp = SrtpParameters(
            SrtpSuite(leg.srtp.suite.name),
            send_key=leg.srtp.send.key_salt,
            receive_key=leg.srtp.receive[0].key_salt,
        )
    return RemoteMedia(
        host=leg.remote.address,
        rtp_port=leg.remote.rtp_port,
        rtcp_port=leg.remote.rtcp_port,
        rtcp_mux=leg.rtcp_mux,
        srtp=srtp,
        payload_types=leg.payload_types,
    )


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Phones:
    """Two loopback phones and the SBC's legs for one call."""

    def __init__(self, session) -> None:
        self.a_sock, self.b_sock = udp_socket(), udp_socket()
        self.a_leg = Leg("127.0.0.1", 1)
        self.b_leg = Leg("127.0.0.1", 2, LegPolicy(srtp_suites=(SUITE,)))
        self.session = session
        a, b = session.local(Side.A), session.local(Side.B)
        self.ports = StreamPorts(
            RelayPorts(a.rtp_port, a.rtcp_port), RelayPorts(b.rtp_port, b.rtcp_port)
        )
        self.a_answer: SessionDescription | None = None
        self.b_offer: SessionDescription | None = None

    def exchange(self, body: bytes):
        sent, pending = anchor_offer(
            SessionDescription.parse(body),
            offerer=self.a_leg,
            answerer=self.b_leg,
            allocate_ports=lambda index, media: self.ports,
            random_bytes=os.urandom,
        )
        b_port = self.b_sock.getsockname()[1]
        answer = answer_like_a_phone(
            sent.to_bytes(),
            address="127.0.0.1",
            port=b_port,
            own_numbers={"telephone-event/8000": "96"},
        )
        answered, plan = anchor_answer(
            SessionDescription.parse(answer), pending, random_bytes=os.urandom
        )
        (stream,) = plan.streams
        self.session.update_leg(Side.A, remote_media(stream.offerer))
        self.session.update_leg(Side.B, remote_media(stream.answerer))
        self.a_answer, self.b_offer = answered, sent
        return sent, answered, plan

    def b_sessions(self):
        """Phone B's SRTP: it checks with the SBC's key from the B-leg offer."""
        (crypto,) = self.b_offer.media[0].attributes("crypto")
        sbc_key = base64.b64decode(crypto.split("inline:")[1])
        profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        inbound = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=sbc_key,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile,
            )
        )
        outbound = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=PHONE_B_KEY,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile,
            )
        )
        return inbound, outbound

    def relay_address_for_a(self) -> tuple[str, int]:
        return self.a_answer.connection.address, self.a_answer.media[0].port


async def receive(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 2048), WAIT)


async def a_to_b(phones: Phones, payload_type: int, sequence: int) -> int:
    """Send from A; return the payload type B reads after SRTP."""
    loop = asyncio.get_running_loop()
    inbound, _ = phones.b_sessions()
    await loop.sock_sendto(
        phones.a_sock, rtp(payload_type, sequence, 0xA), phones.relay_address_for_a()
    )
    return inbound.unprotect(await receive(phones.b_sock))[1] & 0x7F


async def b_to_a(phones: Phones, outbound, payload_type: int, sequence: int) -> int:
    loop = asyncio.get_running_loop()
    target = ("127.0.0.1", phones.b_offer.media[0].port)
    await loop.sock_sendto(
        phones.b_sock, outbound.protect(rtp(payload_type, sequence, 0xB)), target
    )
    return (await receive(phones.a_sock))[1] & 0x7F


async def scenario() -> list[tuple[str, int]]:
    low, high = port_range()
    relay = MediaRelay(MediaSettings(port_min=low, port_max=high))
    session = await relay.allocate(f"sdp-{os.getpid()}", "127.0.0.1", "127.0.0.1")
    phones = Phones(session)
    seen = []
    try:
        a_port = phones.a_sock.getsockname()[1]
        phones.exchange(offer_from_a(a_port, "sendrecv"))
        _, outbound = phones.b_sessions()
        seen.append(("dtmf a->b", await a_to_b(phones, 101, 1)))
        seen.append(("pcma b->a", await b_to_a(phones, outbound, 8, 1)))
        seen.append(("dtmf b->a", await b_to_a(phones, outbound, 96, 2)))

        # C19: hold with a=sendonly as the last line, no CRLF; A keeps sending.
        phones.exchange(offer_from_a(a_port, "sendonly", tail=b""))
        seen.append(("held dtmf a->b", await a_to_b(phones, 101, 2)))

        phones.exchange(offer_from_a(a_port, "sendrecv"))
        seen.append(("resumed pcma a->b", await a_to_b(phones, 8, 3)))
        seen.append(("resumed pcma b->a", await b_to_a(phones, outbound, 8, 3)))
    finally:
        session.close()
        await relay.close()
        phones.a_sock.close()
        phones.b_sock.close()
    return seen


def test_c19_c20_media_flows_through_relay_before_during_and_after_hold():
    seen = asyncio.run(scenario())

    assert seen == [
        ("dtmf a->b", 96),
        ("pcma b->a", 8),
        ("dtmf b->a", 101),
        ("held dtmf a->b", 96),
        ("resumed pcma a->b", 8),
        ("resumed pcma b->a", 8),
    ]
