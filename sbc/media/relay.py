"""The asyncio glue of the relay: sockets, the clock and the timeout ticker.

Run it on uvloop: asyncio's default datagram path allocates a 256 KiB buffer
for every receive. Each port is one socket whose protocol hands datagrams to
the sans-IO StreamCore and sends what it returns out of the other leg.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sbc.media import rtcp
from sbc.media.channel_socket import ParkedPort, open_channel_pair
from sbc.media.core import (
    MEDIA_LOGGER,
    Forward,
    RemoteMedia,
    SessionCore,
    Side,
    StreamCore,
)
from sbc.media.counters import MediaDropReason, StreamCounters
from sbc.media.errors import PortsExhausted, UnknownLeg
from sbc.media.events import MediaEvent
from sbc.media.ports import PortAllocator
from sbc.media.settings import MediaSettings

if TYPE_CHECKING:
    from ipsec.dataplane import DataPlane

_log = logging.getLogger(MEDIA_LOGGER)

_BIND_ATTEMPTS = 64
"""Pairs tried before giving up when other programs hold ports in the range."""

_Receive = Callable[[bytes, Any, float], Forward | None]
"""A Leg's rtp_received or rtcp_received."""


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """Where one leg's peer must send: goes into the SDP the SBC sends it."""

    host: str
    rtp_port: int
    rtcp_port: int


class _Port(asyncio.DatagramProtocol):
    """One bound media socket; the hot path of the relay."""

    __slots__ = ("_receive", "_time", "outputs", "transport", "counters")

    def __init__(
        self,
        receive: _Receive,
        time: Callable[[], float],
        counters: StreamCounters,
    ) -> None:
        self._receive = receive
        self._time = time
        self.counters = counters
        self.outputs: list[asyncio.DatagramTransport] = []
        """The other leg's RTP and RTCP transports, filled once all are bound."""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        forward = self._receive(data, addr, self._time())
        if forward is not None:
            datagram, destination, output = forward
            self.outputs[output].sendto(datagram, destination)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send: the peer is not there yet.
        self.counters.drops[MediaDropReason.SEND_FAILED] += 1


class MediaSession:
    """The media of one call: port pairs per leg and stream, and their rules."""

    def __init__(
        self,
        relay: MediaRelay,
        core: SessionCore,
        hosts: tuple[str, str],
        channels: tuple[DataPlane | None, DataPlane | None] = (None, None),
    ) -> None:
        self._relay = relay
        self.core = core
        self.hosts = hosts
        self.channels = channels
        """Per leg: the IPsec data plane whose channel carries it, or None."""
        self._ports: list[tuple[_Port, _Port, _Port, _Port]] = []
        """Per stream: A's RTP, A's RTCP, B's RTP, B's RTCP protocols."""
        self._parked: dict[Side, list[tuple[_Port, _Port]]] = {}
        """Per leg moved inside IPsec: its sockets, bound but set aside."""
        self._parked_hosts: dict[Side, str] = {}
        self.closed = False

    @property
    def call_id(self) -> str:
        return self.core.call_id

    def local(self, side: Side, stream: int = 0) -> LocalMedia:
        """The relay address and ports to put in the SDP sent to ``side``."""
        ports = self._stream_ports(stream)
        rtp = _transport(ports[2 * side])
        rtcp = _transport(ports[2 * side + 1])
        return LocalMedia(
            host=self.hosts[side],
            rtp_port=rtp.get_extra_info("sockname")[1],
            rtcp_port=rtcp.get_extra_info("sockname")[1],
        )

    def update_leg(self, side: Side, remote: RemoteMedia, stream: int = 0) -> None:
        """Apply the remote half of a completed offer/answer for ``side``.

        Call it again after a re-INVITE or UPDATE: local ports never change,
        and packets from the old address pass until the new one is heard.
        """
        self._stream_ports(stream)
        self.core.streams[stream].update_leg(side, remote)

    def counters(self, side: Side, stream: int = 0) -> StreamCounters:
        """What ``side``'s peer sent on ``stream``, what it was sent, drops."""
        self._stream_ports(stream)
        return self.core.streams[stream].legs[side].counters

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """All counters, keyed ``"<stream>.<leg>"``, for the CDR."""
        return {
            f"{index}.{leg.side.name}": leg.counters.snapshot()
            for index, stream in enumerate(self.core.streams)
            for leg in stream.legs
        }

    def move_leg(self, side: Side, host: str, channel: DataPlane | None) -> None:
        """Re-home ``side`` on ``host``: inside ``channel`` (a data plane's
        datagram channel), or back on the sockets it was bound with (None).

        For the leg whose trunk is chosen after its ports were bound: call it
        before the offer to that trunk is written, since the ports change.
        Sockets left for the channel stay bound and read nothing, so the leg
        can come back to them at once (failover to a trunk in clear).
        Raises PortsExhausted (nothing moved) when the range is full and
        ValueError when no sockets of the leg are bound on ``host``.
        """
        if channel is self.channels[side] and host == self.hosts[side]:
            return
        if channel is None and host != self._parked_hosts.get(side):
            raise ValueError(f"leg {side.name} has no sockets on {host}")
        allocator = self._relay._allocator
        if channel is not None and allocator.available < len(self._ports):
            raise PortsExhausted(f"no port pair left to move leg {side.name}")
        for index, ports in enumerate(self._ports):
            stream = self.core.streams[index]
            old = (ports[2 * side], ports[2 * side + 1])
            if self.channels[side] is None:
                self._parked_hosts[side] = self.hosts[side]
                self._parked.setdefault(side, []).append(old)
                for port in old:
                    _transport(port).set_protocol(ParkedPort(port.counters))
            else:
                _close_pair(old, allocator)
            if channel is None:
                new = self._parked[side].pop(0)
                for port in new:
                    _transport(port).set_protocol(port)
            else:
                new = _channel_pair(stream, side, host, channel, allocator)
            self._ports[index] = _rewired(ports, side, new)
        hosts, channels = list(self.hosts), list(self.channels)
        hosts[side], channels[side] = host, channel
        self.hosts, self.channels = (hosts[0], hosts[1]), (channels[0], channels[1])

    def set_media_timeout(self, timeout: float | None) -> None:
        """Override the relay's media timeout for this call; None disables it."""
        self.core.set_media_timeout(timeout, self._relay.time())

    def close(self) -> None:
        """Close every socket and give the ports back; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for ports in self._ports:
            for port in ports:
                if port.transport is not None:
                    port.transport.close()
            self._relay.release_ports(ports[0], ports[2])
        for pair in (pair for pairs in self._parked.values() for pair in pairs):
            _close_pair(pair, self._relay._allocator)
        self._relay.forget(self)

    def _stream_ports(self, stream: int) -> tuple[_Port, _Port, _Port, _Port]:
        if not 0 <= stream < len(self._ports):
            raise UnknownLeg(f"call {self.call_id} has no media stream {stream}")
        return self._ports[stream]

    async def _bind(self, allocator: PortAllocator, settings: MediaSettings) -> None:
        for stream in self.core.streams:
            a = await _bind_pair(self, stream, Side.A, allocator, settings)
            try:
                b = await _bind_pair(self, stream, Side.B, allocator, settings)
            except BaseException:
                _close_pair(a, allocator)
                raise
            for port in a:
                port.outputs = [_transport(b[0]), _transport(b[1])]
            for port in b:
                port.outputs = [_transport(a[0]), _transport(a[1])]
            self._ports.append((a[0], a[1], b[0], b[1]))


class MediaRelay:
    """Allocates per-call media sessions and reports their timeouts.

    ``on_event`` receives MediaTimedOut; the B2BUA decides what to do (usually
    BYE both legs and ``session.close()``).
    """

    def __init__(
        self,
        settings: MediaSettings,
        on_event: Callable[[MediaEvent], None] | None = None,
        *,
        data_plane: DataPlane | None = None,
    ) -> None:
        self.settings = settings
        self.data_plane = data_plane
        """Carries the legs allocated ``ipsec`` (sbc.media.channel_socket)."""
        self._on_event = on_event
        self._allocator = PortAllocator(settings.port_min, settings.port_max)
        self._sessions: dict[str, MediaSession] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rtcp_preload_started = False

    @property
    def sessions(self) -> dict[str, MediaSession]:
        return self._sessions

    def time(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    async def allocate(
        self,
        call_id: str,
        a_host: str,
        b_host: str,
        streams: int = 1,
        latch_any_source: bool | None = None,
        ipsec: tuple[bool, bool] = (False, False),
    ) -> MediaSession:
        """Bind an RTP/RTCP pair per leg and per m-line for a new call.

        ``a_host``/``b_host`` are the local addresses facing each leg (IPv4 or
        IPv6, independently). A leg marked in ``ipsec`` is bound in the data
        plane's channel at its host instead. Raises PortsExhausted when the
        range is full.
        """
        self._loop = asyncio.get_running_loop()
        if streams < 1:
            raise ValueError("a media session needs at least one stream")
        if any(ipsec) and self.data_plane is None:
            raise ValueError("a leg inside IPsec needs the relay's data plane")
        if call_id in self._sessions:
            raise ValueError(f"media for call {call_id} is already allocated")
        any_source = (
            self.settings.latch_any_source
            if latch_any_source is None
            else latch_any_source
        )
        core = SessionCore(
            call_id, streams, self.time(), self.settings.media_timeout, any_source
        )
        plane = self.data_plane
        channels = (plane if ipsec[0] else None, plane if ipsec[1] else None)
        session = MediaSession(self, core, (a_host, b_host), channels)
        try:
            await session._bind(self._allocator, self.settings)
        except BaseException:
            session.close()
            raise
        self._sessions[call_id] = session
        self._start_ticker()
        if not self._rtcp_preload_started:
            # Before the first RTCP packet, not on it: see sbc.media.rtcp.
            self._rtcp_preload_started = True
            self._loop.run_in_executor(None, rtcp.preload)
        return session

    def release_ports(self, a_rtp: _Port, b_rtp: _Port) -> None:
        for port in (a_rtp, b_rtp):
            if port.transport is not None:
                self._allocator.release(port.transport.get_extra_info("sockname")[1])

    def forget(self, session: MediaSession) -> None:
        if self._sessions.get(session.call_id) is session:
            del self._sessions[session.call_id]

    def poll_timeouts(self) -> list[MediaEvent]:
        """Check every session now; the ticker calls this every interval."""
        now = self.time()
        events: list[MediaEvent] = []
        for session in list(self._sessions.values()):
            event = session.core.poll_timeout(now)
            if event is not None:
                events.append(event)
        return events

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for session in list(self._sessions.values()):
            session.close()

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self._sessions:
            await asyncio.sleep(self.settings.timeout_check_interval)
            for event in self.poll_timeouts():
                _log.info("media: call %s timed out: no RTP", event.call_id)
                if self._on_event is not None:
                    self._on_event(event)


async def _bind_pair(
    session: MediaSession,
    stream: StreamCore,
    side: Side,
    allocator: PortAllocator,
    settings: MediaSettings,
) -> tuple[_Port, _Port]:
    host = session.hosts[side]
    loop = asyncio.get_running_loop()
    leg = stream.legs[side]
    channel = session.channels[side]
    if channel is not None:
        return _channel_pair(stream, side, host, channel, allocator)
    for _ in range(min(_BIND_ATTEMPTS, allocator.available)):
        port = allocator.take()
        rtp = _Port(leg.rtp_received, loop.time, leg.counters)
        rtcp = _Port(leg.rtcp_received, loop.time, leg.counters)
        try:
            rtp_socket = _bound_socket(host, port, settings.receive_buffer)
        except OSError as exc:
            _skip_busy_port(allocator, port, exc)
            continue
        try:
            rtcp_socket = _bound_socket(host, port + 1, settings.receive_buffer)
        except OSError as exc:
            rtp_socket.close()
            _skip_busy_port(allocator, port, exc)
            continue
        for protocol, sock in ((rtp, rtp_socket), (rtcp, rtcp_socket)):
            await loop.create_datagram_endpoint(_factory(protocol), sock=sock)
        return rtp, rtcp
    raise PortsExhausted(f"no RTP/RTCP pair could be bound on {host}")


def _channel_pair(
    stream: StreamCore,
    side: Side,
    host: str,
    channel: DataPlane,
    allocator: PortAllocator,
) -> tuple[_Port, _Port]:
    """A pair bound in ``channel``: nothing in the kernel, nothing busy."""
    time = asyncio.get_running_loop().time
    leg = stream.legs[side]
    rtp = _Port(leg.rtp_received, time, leg.counters)
    rtcp = _Port(leg.rtcp_received, time, leg.counters)
    open_channel_pair(channel, host, allocator.take(), (rtp, rtcp))
    return rtp, rtcp


def _rewired(
    ports: tuple[_Port, _Port, _Port, _Port], side: Side, new: tuple[_Port, _Port]
) -> tuple[_Port, _Port, _Port, _Port]:
    """The stream's ports with ``side``'s pair replaced, each leg sending
    out of the other's pair."""
    other = (ports[2], ports[3]) if side is Side.A else (ports[0], ports[1])
    for port in other:
        port.outputs = [_transport(new[0]), _transport(new[1])]
    for port in new:
        port.outputs = [_transport(other[0]), _transport(other[1])]
    return (*new, *other) if side is Side.A else (*other, *new)


def _close_pair(pair: tuple[_Port, _Port], allocator: PortAllocator) -> None:
    rtp = _transport(pair[0])
    allocator.release(rtp.get_extra_info("sockname")[1])
    for port in pair:
        _transport(port).close()


def _skip_busy_port(allocator: PortAllocator, port: int, exc: OSError) -> None:
    # Another program holds it: put it back at the end of the queue and move on.
    allocator.release(port)
    if exc.errno != errno.EADDRINUSE:
        raise exc


def _bound_socket(host: str, port: int, receive_buffer: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _factory(protocol: _Port) -> Callable[[], _Port]:
    return lambda: protocol


def _transport(port: _Port) -> asyncio.DatagramTransport:
    if port.transport is None:
        raise RuntimeError("media port lost its transport before it was wired")
    return port.transport
