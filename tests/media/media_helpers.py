"""A relay running on uvloop in a thread, and plain-socket RTP peers.

The peers are independent of the relay's code: packets are built and read
with aiortc's RTP classes and protected with libsrtp (pylibsrtp) directly.
Every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pylibsrtp
import uvloop
from aiortc.rtp import RtpPacket

from sbc.media import MediaEvent, MediaRelay, MediaSettings
from sbc.media.srtp import SrtpSuite

WAIT = 2.0
"""Seconds a peer waits for a datagram that must arrive."""

QUIET = 0.2
"""Seconds a peer waits to be sure a datagram does not arrive."""

PROFILES = {
    SrtpSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    SrtpSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    SrtpSuite.AEAD_AES_128_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    SrtpSuite.AEAD_AES_256_GCM: pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def worker_port_range() -> tuple[int, int]:
    """A range per process, so two xdist workers rarely contend for ports."""
    base = 30000 + (os.getpid() % 100) * 200
    return base, base + 199


class RelayThread:
    """A MediaRelay on its own uvloop loop; calls hop onto that loop."""

    def __init__(self, settings: MediaSettings | None = None) -> None:
        low, high = worker_port_range()
        self.settings = settings or MediaSettings(port_min=low, port_max=high)
        self.events: list[MediaEvent] = []
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.relay = self.call(lambda: MediaRelay(self.settings, self.events.append))

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def call(self, function: Callable[[], Any]) -> Any:
        async def hop() -> Any:
            return function()

        return self.run(hop())

    def stop(self) -> None:
        self.run(self.relay.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


class Peer:
    """One UDP socket standing in for a SIP UA's RTP or RTCP port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host
        self.port: int = self.sock.getsockname()[1]

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        self.sock.sendto(data, destination)

    def receive(self, timeout: float = WAIT) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recvfrom(65535)[0]

    def receive_from(self, timeout: float = WAIT) -> tuple[bytes, tuple[Any, ...]]:
        self.sock.settimeout(timeout)
        return self.sock.recvfrom(65535)

    def nothing_arrives(self) -> bool:
        self.sock.settimeout(QUIET)
        try:
            self.sock.recvfrom(65535)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def rtp_packet(
    seq: int,
    payload_type: int = 0,
    ssrc: int = 0x1234ABCD,
    payload: bytes | None = None,
    marker: int = 0,
) -> bytes:
    """A G.711-sized RTP packet built by aiortc, 20 ms per sequence number."""
    packet = RtpPacket(
        payload_type=payload_type,
        marker=marker,
        sequence_number=seq & 0xFFFF,
        timestamp=(seq * 160) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload if payload is not None else bytes([seq & 0xFF]) * 160,
    )
    return bytes(packet.serialize())


def srtp_session(suite: SrtpSuite, key: bytes, outbound: bool) -> pylibsrtp.Session:
    """A libsrtp session for the test peer, independent of sbc.media.srtp."""
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=PROFILES[suite],
    )
    return pylibsrtp.Session(policy)
