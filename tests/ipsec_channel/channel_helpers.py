"""Two IPsec data planes on loopback, and SIP and RTP peers on their channels.

The SAs and policies are installed by hand, as the IKE daemon would: one
ESP SA each way between the two planes' UDP encapsulation sockets (port 0),
and policies covering all UDP between the two inner addresses. Transport
mode uses the loopback address inside as well, so a datagram that leaked
past the channel would show on ``lo`` in clear; tunnel mode uses TEST-NET-2
inner addresses that exist nowhere but inside the SAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, cast

import pytest
import uvloop

from ipsec.dataplane import DataPlane
from ipsec.esp import Encryption, Integrity, Lifetime, Mode, Protocol, SAConfig
from ipsec.esp.keylog import EspKeyLog
from ipsec.esp.spd import Direction, TrafficSelector
from sbc.io.endpoint import SipEndpoint
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.media import MediaEvent, MediaRelay, MediaSettings
from sbc.sip.events import RequestReceived, ResponseReceived, TransactionEvent
from sbc.sip.message import Headers, Request, Response, make_response
from sbc.sip.transaction import TransactionLayer

LOOPBACK = "127.0.0.1"
TUNNEL_INNER = ("198.51.100.1", "198.51.100.2")
TUNNEL_INNER6 = ("2001:db8::1", "2001:db8::2")
PATHS = [
    pytest.param(Mode.TUNNEL, TUNNEL_INNER, id="tunnel"),
    pytest.param(Mode.TUNNEL, TUNNEL_INNER6, id="tunnel-ipv6"),
    pytest.param(Mode.TRANSPORT, TUNNEL_INNER, id="transport"),
]
"""(mode, inner addresses) for tests that run on every kind of path."""
WAIT = 5.0
"""Seconds any single wait may take before the test fails."""


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run one test coroutine on a fresh uvloop loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coroutine, 60))


def free_udp_port() -> int:
    """A port no kernel socket on loopback holds now (for channel bindings,
    so that a capture filter on it sees only this test's packets)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@dataclass
class Planes:
    """The SBC's data plane and the peer's, joined by one SA each way."""

    sbc: DataPlane
    peer: DataPlane
    sbc_address: str
    """The SBC's address inside the SAs (its protected listener's)."""
    peer_address: str
    to_peer: SAConfig
    to_sbc: SAConfig
    encap_ports: tuple[int, int]
    """The UDP encapsulation ports of the SBC's plane and the peer's."""

    def remove_sas(self) -> None:
        """Delete both SAs on both sides; the policies stay."""
        self.sbc.del_sa(self.to_peer.spi, inbound=False)
        self.sbc.del_sa(self.to_sbc.spi, inbound=True)
        self.peer.del_sa(self.to_sbc.spi, inbound=False)
        self.peer.del_sa(self.to_peer.spi, inbound=True)

    def close(self) -> None:
        self.sbc.close()
        self.peer.close()


def _sa(spi: int, mode: Mode) -> SAConfig:
    encryption = Encryption.AES_GCM_16_128
    return SAConfig(
        soft=Lifetime(),
        hard=Lifetime(),
        spi=spi,
        protocol=Protocol.ESP,
        mode=mode,
        encryption=encryption,
        integrity=Integrity.NONE,
        encryption_key=os.urandom(encryption.key_length),
        integrity_key=b"",
        tunnel_source=ip_address(LOOPBACK),
        tunnel_destination=ip_address(LOOPBACK),
    )


def _udp_to_and_from(address: str) -> TrafficSelector:
    prefix = 128 if ":" in address else 32
    return TrafficSelector.from_network(f"{address}/{prefix}", 17, None)


def connect_planes(
    mode: Mode,
    keylog: EspKeyLog | None = None,
    inner: tuple[str, str] = TUNNEL_INNER,
) -> Planes:
    """Two data planes on the running loop, protecting all UDP between them
    (between the ``inner`` addresses in tunnel mode)."""
    loop = asyncio.get_running_loop()
    # The SBC's plane installs both SAs: its key log holds both.
    sbc = DataPlane(loop, keylog=keylog)
    peer = DataPlane(loop)
    sbc_port = sbc.open_udp_encap(LOOPBACK, 0).local_address[1]
    peer_port = peer.open_udp_encap(LOOPBACK, 0).local_address[1]
    spi = 0x10000 + secrets.randbelow(0x7FFF0000)
    to_peer, to_sbc = _sa(spi, mode), _sa(spi + 1, mode)
    if mode is Mode.TUNNEL:
        sbc_address, peer_address = inner
    else:
        sbc_address = peer_address = LOOPBACK
    ours, theirs = _udp_to_and_from(sbc_address), _udp_to_and_from(peer_address)

    sbc.add_sa(to_peer, inbound=False, peer=LOOPBACK, peer_port=peer_port)
    sbc.add_sa(to_sbc, inbound=True)
    peer.add_sa(to_sbc, inbound=False, peer=LOOPBACK, peer_port=sbc_port)
    peer.add_sa(to_peer, inbound=True)
    sbc.add_policy(ours, theirs, to_peer.spi)
    sbc.add_policy(ours, theirs, to_sbc.spi, direction=Direction.INBOUND)
    peer.add_policy(theirs, ours, to_sbc.spi)
    peer.add_policy(theirs, ours, to_peer.spi, direction=Direction.INBOUND)
    return Planes(
        sbc, peer, sbc_address, peer_address, to_peer, to_sbc, (sbc_port, peer_port)
    )


def new_request(
    method: str,
    uri: str,
    *,
    call_id: str,
    cseq: int = 1,
    from_tag: str = "uac1",
    to_tag: str | None = None,
    contact: str | None = None,
    body: bytes = b"",
) -> Request:
    """A request without Via (the endpoint adds it)."""
    to = "<sip:+15550100@example.net>" + (f";tag={to_tag}" if to_tag else "")
    fields = [
        ("Max-Forwards", "70"),
        ("From", f"<sip:+15550101@sbc.example.com>;tag={from_tag}"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is not None:
        fields.append(("Contact", contact))
    if body:
        fields.append(("Content-Type", "application/sdp"))
    return Request(method, uri, Headers(fields), body)


def sdp(address: str, rtp_port: int, session: int = 1) -> bytes:
    """A one-stream PCMU offer or answer."""
    family = "IP6" if ":" in address else "IP4"
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN {family} {address}\r\n"
        "s=-\r\n"
        f"c=IN {family} {address}\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


@dataclass
class ScriptedUser:
    """A transaction user that records every event and answers requests.

    INVITE gets 200 with ``answer`` as its body and ``contact``; every other
    request gets 200. ACKs are only recorded.
    """

    layer: TransactionLayer
    contact: str = ""
    answer: bytes = b""
    events: asyncio.Queue[TransactionEvent] = field(default_factory=asyncio.Queue)

    def handle_event(self, event: TransactionEvent, now: float) -> None:
        self.events.put_nowait(event)
        if isinstance(event, RequestReceived):
            self._answer(event, now)

    def handle_timer(self, now: float) -> None:
        pass

    def next_timer(self) -> float | None:
        return None

    async def next(self, kind: type[Any], timeout: float = WAIT) -> Any:
        """The next event of ``kind``, skipping others."""
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(event, kind):
                return event

    async def final_response(self, timeout: float = WAIT) -> Response:
        """The next final response, skipping provisional ones."""
        while True:
            event = await self.next(ResponseReceived, timeout)
            if event.response.status >= 200:
                return cast(Response, event.response)

    def _answer(self, event: RequestReceived, now: float) -> None:
        request = event.request
        response = make_response(request, 200, to_tag="uas1")
        if request.method == "INVITE":
            response.headers.add("Contact", self.contact)
            response.headers.add("Content-Type", "application/sdp")
            response.body = self.answer
        self.layer.send_response(response, now, key=event.key)


class RtpPeer(asyncio.DatagramProtocol):
    """A kernel UDP socket on loopback that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("", 0)

    @classmethod
    async def open(cls) -> RtpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: peer, local_addr=(LOOPBACK, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.address = (sockname[0], sockname[1])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, destination)

    async def receive(self, timeout: float = WAIT) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ChannelPeer:
    """A binding on a data plane's channel that queues what it receives."""

    def __init__(self, plane: DataPlane, address: str, port: int) -> None:
        self.plane = plane
        self.address = (address, port)
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        plane.bind(
            address, port, lambda data, source: self.queue.put_nowait((data, source))
        )

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        host, port = self.address
        assert (
            self.plane.send(host, destination[0], 17, port, destination[1], data)
            is None
        )

    async def receive(self, timeout: float = WAIT) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def rtp_packet(sequence: int, payload: bytes, ssrc: int = 0x11223344) -> bytes:
    """RTP version 2, PCMU, the given sequence number (RFC 3550 §5.1)."""
    header = bytes([0x80, 0]) + sequence.to_bytes(2, "big")
    header += (sequence * 160).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    return header + payload


@dataclass
class Protected:
    """An SBC endpoint and a UAS endpoint, each on its plane's channel."""

    planes: Planes
    sbc: SipEndpoint
    uas: SipEndpoint
    sbc_user: ScriptedUser
    uas_user: ScriptedUser

    @property
    def uas_address(self) -> tuple[str, int]:
        return self.uas.listening[0].host, self.uas.listening[0].port

    @property
    def sbc_address(self) -> tuple[str, int]:
        return self.sbc.listening[0].host, self.sbc.listening[0].port


@contextlib.asynccontextmanager
async def protected_endpoints(
    mode: Mode = Mode.TUNNEL,
    *,
    inner: tuple[str, str] = TUNNEL_INNER,
    keylog: EspKeyLog | None = None,
    pin_peer: bool = True,
    answer: bytes = b"",
    clear: bool = False,
) -> AsyncIterator[Protected]:
    """Two data planes and both endpoints on fresh channel ports.

    ``pin_peer`` lists the UAS's address among the SBC's IPsec peers (as a
    protected trunk's target); the UAS always lists the SBC's. ``clear``
    gives the SBC a kernel UDP listener on loopback too, after its IPsec one.
    """
    planes = connect_planes(mode, keylog, inner)
    sbc_spec = ListenSpec("UDP", planes.sbc_address, free_udp_port(), ipsec=True)
    uas_spec = ListenSpec("UDP", planes.peer_address, free_udp_port(), ipsec=True)
    peers = {planes.peer_address: (sbc_spec.host, sbc_spec.port)} if pin_peer else {}
    listen = (sbc_spec, ListenSpec("UDP", LOOPBACK, 0)) if clear else (sbc_spec,)
    sbc = SipEndpoint(
        TransportSettings(listen=listen), data_plane=planes.sbc, ipsec_peers=peers
    )
    uas = SipEndpoint(
        TransportSettings(listen=(uas_spec,)),
        data_plane=planes.peer,
        ipsec_peers={planes.sbc_address: (uas_spec.host, uas_spec.port)},
    )
    await sbc.start()
    await uas.start()
    sbc_user = ScriptedUser(sbc.transactions)
    uas_user = ScriptedUser(
        uas.transactions,
        contact=f"<sip:uas@{uas_spec.host}:{uas_spec.port}>",
        answer=answer,
    )
    sbc.user, uas.user = sbc_user, uas_user
    try:
        yield Protected(planes, sbc, uas, sbc_user, uas_user)
    finally:
        await sbc.close()
        await uas.close()
        planes.close()


def relay_for(
    planes: Planes,
    on_event: Callable[[MediaEvent], None] | None = None,
    **settings: Any,
) -> MediaRelay:
    """A relay on this process's port range whose IPsec legs use the SBC's plane."""
    low, high = worker_port_range()
    media = MediaSettings(port_min=low, port_max=high, **settings)
    return MediaRelay(media, on_event, data_plane=planes.sbc)


def receiver_report(sender_ssrc: int, source_ssrc: int, fraction_lost: int) -> bytes:
    """An RTCP RR with one report block (RFC 3550 §6.4.2)."""
    header = (
        bytes([0x81, 201]) + (7).to_bytes(2, "big") + sender_ssrc.to_bytes(4, "big")
    )
    block = (
        source_ssrc.to_bytes(4, "big") + bytes([fraction_lost]) + (3).to_bytes(3, "big")
    )
    return (
        header + block + (100).to_bytes(4, "big") + (80).to_bytes(4, "big") + bytes(8)
    )


def worker_port_range() -> tuple[int, int]:
    """A relay port range per process, so xdist workers rarely contend."""
    base = 40000 + (os.getpid() % 100) * 200
    return base, base + 199
