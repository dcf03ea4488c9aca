"""The media body hook (sbc.b2bua.media) against the real relay on loopback.

The offers and answers are written here as plain text; packets are sent
and read with plain sockets, so the relay's ports in the rewritten SDP are
proven by traffic, not by reading the hook's own state.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket

import pytest

from sbc.b2bua.call import Side
from sbc.b2bua.media import MediaAnchor
from sbc.media import MediaRelay, MediaSettings
from sbc.sdp import LegPolicy
from sbc.sip.errors import SipError

SDP = "application/sdp"
HOST = "127.0.0.1"
CALL_ID = "media-hook-test"


def port_range() -> tuple[int, int]:
    # Per process, apart from the other media tests' ranges.
    base = 35000 + (os.getpid() % 50) * 100
    return base, base + 99


def body(port: int, *, streams: int = 1, codecs: str = "0", version: int = 1) -> bytes:
    lines = ["v=0", f"o=x 1 {version} IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}"]
    lines.append("t=0 0")
    for _ in range(streams):
        lines += [f"m=audio {port} RTP/AVP {codecs}", "a=rtpmap:0 PCMU/8000"]
    return ("\r\n".join(lines) + "\r\n").encode()


def m_port(sdp: bytes) -> int:
    match = re.search(rb"^m=audio (\d+) ", sdp, re.M)
    assert match, sdp
    return int(match.group(1))


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def receive(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 2048), 2.0)


async def new_call(policy: LegPolicy | None = None):
    relay = MediaRelay(MediaSettings(*port_range(), media_timeout=30.0))
    anchor = MediaAnchor(os.urandom)
    session = await relay.allocate(CALL_ID, HOST, HOST)
    policy = policy or LegPolicy()
    anchor.prepare(CALL_ID, session, (policy, policy))
    return relay, anchor


def test_media_hook_offer_answer_relays_rtp_through_rewritten_ports():
    async def scenario():
        relay, anchor = await new_call()
        phone_a, phone_b = udp(), udp()
        try:
            offer = anchor.rewrite(CALL_ID, Side.A, body(phone_a.getsockname()[1]), SDP)
            answer = anchor.rewrite(
                CALL_ID, Side.B, body(phone_b.getsockname()[1]), SDP
            )
            packet = bytes([0x80, 0, 0, 1]) + bytes(8) + b"voice"
            phone_a.sendto(packet, (HOST, m_port(answer)))
            relayed = await receive(phone_b)
            phone_b.sendto(packet, (HOST, m_port(offer)))
            returned = await receive(phone_a)
            anchor.release(CALL_ID)
            return offer, relayed, returned, anchor.take_counters(CALL_ID), relay
        finally:
            phone_a.close()
            phone_b.close()
            await relay.close()

    offer, relayed, returned, counters, relay = asyncio.run(scenario())

    assert relayed == returned == bytes([0x80, 0, 0, 1]) + bytes(8) + b"voice"
    assert f"c=IN IP4 {HOST}".encode() in offer
    assert counters["0.A"]["packets_received"] == 1
    assert counters["0.B"]["packets_received"] == 1
    assert relay.sessions == {}


def test_media_hook_reoffer_with_more_streams_refused_488():
    async def scenario():
        relay, anchor = await new_call()
        try:
            anchor.rewrite(CALL_ID, Side.A, body(4000), SDP)
            anchor.rewrite(CALL_ID, Side.B, body(4002), SDP)
            with pytest.raises(SipError) as refused:
                anchor.rewrite(CALL_ID, Side.A, body(4000, streams=2, version=2), SDP)
            return refused.value, dict(relay.sessions)
        finally:
            await relay.close()

    error, sessions = asyncio.run(scenario())

    assert error.status_code == 488
    assert CALL_ID in sessions  # a refused re-offer keeps the call's media


def test_media_hook_first_offer_refused_releases_ports():
    async def scenario():
        relay, anchor = await new_call(LegPolicy(codecs=frozenset({"G722"})))
        try:
            with pytest.raises(SipError) as refused:
                anchor.rewrite(CALL_ID, Side.A, body(4000), SDP)
            return refused.value, dict(relay.sessions), anchor.prepared(CALL_ID)
        finally:
            await relay.close()

    error, sessions, prepared = asyncio.run(scenario())

    assert error.status_code == 488
    assert sessions == {} and not prepared


def test_media_hook_timeout_before_answer_releases_after_answer_records():
    async def scenario():
        relay, anchor = await new_call()
        try:
            anchor.rewrite(CALL_ID, Side.A, body(4000), SDP)
            anchor.timed_out(CALL_ID, 31.0, 0.0)
            unanswered = (dict(relay.sessions), anchor.take_counters(CALL_ID))
            session = await relay.allocate(CALL_ID, HOST, HOST)
            anchor.prepare(CALL_ID, session, (LegPolicy(), LegPolicy()))
            anchor.rewrite(CALL_ID, Side.A, body(4000), SDP)
            anchor.rewrite(CALL_ID, Side.B, body(4002), SDP)
            anchor.timed_out(CALL_ID, 32.0, 0.0)
            still_open = CALL_ID in relay.sessions
            anchor.release(CALL_ID)
            return unanswered, still_open, anchor.take_counters(CALL_ID)
        finally:
            await relay.close()

    (sessions, counters), still_open, answered = asyncio.run(scenario())

    assert sessions == {} and counters == {}
    assert still_open
    assert answered["timeout"] == {"idle_for": 32.0}


def test_media_hook_passes_non_sdp_and_unprepared_calls_unchanged():
    anchor = MediaAnchor(os.urandom)

    assert anchor.rewrite("unknown", Side.A, b"v=0\r\n", SDP) == b"v=0\r\n"
    assert anchor.rewrite("unknown", Side.A, b"<xml/>", "application/xml") == (
        b"<xml/>"
    )
