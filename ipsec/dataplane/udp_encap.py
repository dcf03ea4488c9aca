"""UDP encapsulation of ESP (RFC 3948) on one socket shared with IKE.

One socket per local address (port 4500 by default) carries three kinds of
datagram, told apart by their first bytes (RFC 3948 §2.2-2.3):

- a four-byte zero non-ESP marker: an IKE message, handed to the IKE handler
  without the marker;
- a single 0xFF byte: a NAT keepalive, counted and ignored;
- anything else: ESP, starting with a non-zero SPI.

Sends are queued and flushed once per event-loop iteration, so a burst read
in one wakeup leaves in few system calls: runs of equal-sized datagrams to
one peer go out as one UDP GSO ``sendmsg`` (UDP_SEGMENT). Single datagrams
leave with a UDP checksum of zero (RFC 3948 §3.1.1) where Linux allows it;
Linux refuses GSO on a socket with the checksum switched off, so batches
carry a computed checksum. See docs/ipsec-datapaths.md.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from .counters import PathCounters, PathDrop

logger = logging.getLogger("ipsec.dataplane")

IKE_PORT_NAT_T = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"
DEFAULT_KEEPALIVE_INTERVAL = 20.0

# Linux socket options the socket module does not export.
SO_NO_CHECK = 11
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
UDP_NO_CHECK6_TX = 101
UDP_NO_CHECK6_RX = 102
UDP_SEGMENT = 103
UDP_GRO = 104

# Kernel limits on one GSO send (UDP_MAX_SEGMENTS is 64 on older kernels).
_MAX_SEGMENTS = 64
_MAX_GSO_BYTES = 65000
# Datagrams read per wakeup: enough to batch, few enough to stay fair.
_READ_BUDGET = 256
_RECEIVE_SIZE = 65535
_DEFAULT_BUFFER = 4 * 1024 * 1024

Address = tuple[Any, ...]
EspHandler = Callable[[bytes, Address], None]
IkeHandler = Callable[[bytes, Address], None]


class DatagramKind(enum.Enum):
    ESP = "esp"
    IKE = "ike"
    KEEPALIVE = "keepalive"
    MALFORMED = "malformed"


def classify(datagram: bytes) -> DatagramKind:
    """Tell IKE, NAT keepalive and ESP apart (RFC 3948 §2.2-2.3).

    ESP needs at least SPI and sequence number; a zero SPI is reserved
    (RFC 4303 §2.1), which is what lets the zero marker mean IKE.
    """
    if len(datagram) >= 8 and datagram[:4] != NON_ESP_MARKER:
        return DatagramKind.ESP
    if datagram == NAT_KEEPALIVE:
        return DatagramKind.KEEPALIVE
    if len(datagram) > 4 and datagram[:4] == NON_ESP_MARKER:
        return DatagramKind.IKE
    return DatagramKind.MALFORMED


class UdpEncapSocket:
    """One RFC 3948 socket: reads ESP/IKE/keepalives, batches ESP sends.

    Build it with :meth:`open`. ``on_esp(datagram, address)`` is called for
    every ESP datagram; ``on_ike`` (set with :meth:`set_ike_handler`) for every
    IKE message, marker removed. Neither may raise.
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_esp: EspHandler,
        *,
        zero_checksum: bool = True,
        gro: bool = False,
    ) -> None:
        self.sock = sock
        self.loop = loop
        self.counters = PathCounters()
        self.ike_messages = 0
        self.keepalives_received = 0
        self.gso_batches = 0
        self._on_esp = on_esp
        self._on_ike: IkeHandler | None = None
        self._pending: list[tuple[bytes, Address]] = []
        self._flush_scheduled = False
        self._keepalives: dict[Address, asyncio.TimerHandle] = {}
        self._family = sock.family
        self._zero_checksum = zero_checksum
        self._checksum_off = False
        self._gso = True
        self.coalesced_reads = 0
        self._gro = gro and _enable_gro(sock)
        loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        on_esp: EspHandler,
        host: str = "0.0.0.0",
        port: int = IKE_PORT_NAT_T,
        *,
        zero_checksum_ipv6: bool = False,
        buffer_size: int = _DEFAULT_BUFFER,
        gro: bool = False,
    ) -> UdpEncapSocket:
        """Bind a non-blocking UDP socket on (host, port); port 0 picks one.

        IPv4 sends a zero checksum by default. IPv6 only on request: a
        receiver drops zero-checksum IPv6 UDP unless it opted in (RFC 6936
        §5), which this socket always does for what it receives.

        ``gro`` asks the kernel to coalesce same-sized datagrams of one flow
        (UDP_GRO). It pays off behind NICs whose driver aggregates; on veth
        and loopback nothing coalesces and the ancillary data costs time.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _set_buffers(sock, buffer_size)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.SOL_UDP, UDP_NO_CHECK6_RX, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        zero_checksum = family == socket.AF_INET or zero_checksum_ipv6
        return cls(sock, loop, on_esp, zero_checksum=zero_checksum, gro=gro)

    @property
    def local_address(self) -> Address:
        return tuple(self.sock.getsockname())

    def set_ike_handler(self, handler: IkeHandler | None) -> None:
        """Register the IKE daemon's callback for non-ESP-marked datagrams."""
        self._on_ike = handler

    def send_ike(self, message: bytes, address: Address) -> None:
        """Send an IKE message with the non-ESP marker (RFC 3948 §2.2).

        ESP queued earlier leaves first: a Delete's answer must not overtake
        packets sealed with the SA it deletes, or the peer drops them.
        """
        if self._pending:
            self.flush()
        self._send_now(NON_ESP_MARKER + message, address)

    def send_esp(self, datagram: bytes, address: Address) -> None:
        """Queue one ESP datagram; it leaves at the end of this loop iteration."""
        self._pending.append((datagram, address))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def start_keepalive(
        self, address: Address, interval: float = DEFAULT_KEEPALIVE_INTERVAL
    ) -> None:
        """Send a NAT keepalive to ``address`` every ``interval`` seconds.

        RFC 3948 §4 suggests 20 s; the IKE daemon calls this only when NAT
        detection found a NAT in front of this host.
        """
        self.stop_keepalive(address)

        def tick() -> None:
            self._send_now(NAT_KEEPALIVE, address)
            self._keepalives[address] = self.loop.call_later(interval, tick)

        self._keepalives[address] = self.loop.call_later(interval, tick)

    def stop_keepalive(self, address: Address) -> None:
        handle = self._keepalives.pop(address, None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        for handle in self._keepalives.values():
            handle.cancel()
        self._keepalives.clear()
        self.flush()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _on_readable(self) -> None:
        # Drain what the kernel holds, bounded so other sockets get a turn.
        # This runs per datagram, so ESP is recognised inline (classify's
        # rule) and the counters are added up once per wakeup.
        if self._gro:
            self._drain_coalesced()
            return
        receive, on_esp = self.sock.recvfrom, self._on_esp
        packets = octets = 0
        try:
            for _ in range(_READ_BUDGET):
                datagram, address = receive(_RECEIVE_SIZE)
                packets += 1
                octets += len(datagram)
                if len(datagram) >= 8 and datagram[:4] != NON_ESP_MARKER:
                    on_esp(datagram, address)
                else:
                    self._dispatch_other(datagram, address)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            # ICMP errors surface here on some kernels; not fatal.
            logger.debug("encap receive error: %s", error)
        self.counters.packets_in += packets
        self.counters.bytes_in += octets

    def _drain_coalesced(self) -> None:
        for _ in range(_READ_BUDGET):
            try:
                self._receive_coalesced()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.debug("encap receive error: %s", error)
                return

    def _receive_coalesced(self) -> None:
        # With UDP_GRO the kernel may hand over several same-sized datagrams
        # in one buffer, with the segment size in a control message.
        data, ancillary, _, address = self.sock.recvmsg(_RECEIVE_SIZE, 64)
        segment = len(data)
        for level, kind, value in ancillary:
            if level == socket.SOL_UDP and kind == UDP_GRO:
                segment = int.from_bytes(value[:2], "little") or segment
        if segment >= len(data):
            self._dispatch(data, address)
            return
        self.coalesced_reads += 1
        for start in range(0, len(data), segment):
            self._dispatch(data[start : start + segment], address)

    def _dispatch(self, datagram: bytes, address: Address) -> None:
        self.counters.packets_in += 1
        self.counters.bytes_in += len(datagram)
        if len(datagram) >= 8 and datagram[:4] != NON_ESP_MARKER:
            self._on_esp(datagram, address)
        else:
            self._dispatch_other(datagram, address)

    def _dispatch_other(self, datagram: bytes, address: Address) -> None:
        kind = classify(datagram)
        if kind is DatagramKind.IKE:
            self.ike_messages += 1
            if self._on_ike is not None:
                self._on_ike(datagram[4:], address)
        elif kind is DatagramKind.KEEPALIVE:
            self.keepalives_received += 1
        else:
            self.counters.drop(PathDrop.MALFORMED)

    def flush(self) -> None:
        """Send everything queued: GSO runs where possible, else one by one."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        count = len(pending)
        start = 0
        while start < count:
            end = _run_end(pending, start, count) if self._gso else start + 1
            if end - start == 1:
                self._send_now(*pending[start])
            else:
                self._send_segments(pending, start, end)
            start = end

    def _send_segments(
        self, pending: list[tuple[bytes, Address]], start: int, end: int
    ) -> None:
        buffers = [datagram for datagram, _ in pending[start:end]]
        size = len(buffers[0])
        address = pending[start][1]
        self._set_checksum_off(False)
        try:
            self.sock.sendmsg(
                buffers, [(socket.SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little"))],
                0, address,
            )  # fmt: skip
        except OSError as error:
            if error.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                # No GSO on this route or kernel: fall back to single sends.
                logger.debug("UDP GSO unavailable (%s); sending singly", error)
                self._gso = False
                for datagram in buffers:
                    self._send_now(datagram, address)
            else:
                self._count_send_failure(error, end - start)
            return
        self.gso_batches += 1
        self.counters.packets_out += end - start
        self.counters.bytes_out += sum(len(datagram) for datagram in buffers)

    def _send_now(self, datagram: bytes, address: Address) -> None:
        self._set_checksum_off(self._zero_checksum)
        try:
            self.sock.sendto(datagram, address)
        except OSError as error:
            self._count_send_failure(error, 1)
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(datagram)

    def _set_checksum_off(self, off: bool) -> None:
        # The kernel refuses GSO on a socket with the checksum off (EINVAL),
        # so the option follows the kind of send; it changes only on switches.
        if off == self._checksum_off:
            return
        if self._family == socket.AF_INET:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, int(off))
        else:
            self.sock.setsockopt(socket.SOL_UDP, UDP_NO_CHECK6_TX, int(off))
        self._checksum_off = off

    def _count_send_failure(self, error: OSError, packets: int) -> None:
        logger.debug("encap send failed: %s", error)
        for _ in range(packets):
            self.counters.drop(PathDrop.SEND_FAILED)


def _run_end(pending: list[tuple[bytes, Address]], start: int, count: int) -> int:
    """End of the GSO run starting at ``start``: one peer, equal sizes.

    The last segment of a run may be shorter than the others (the kernel's
    rule for UDP_SEGMENT), so a shorter datagram closes the run.
    """
    datagram, address = pending[start]
    size = len(datagram)
    total = size
    end = start + 1
    limit = min(count, start + _MAX_SEGMENTS)
    while end < limit:
        following, following_address = pending[end]
        length = len(following)
        if following_address != address or length > size:
            break
        total += length
        if total > _MAX_GSO_BYTES:
            break
        end += 1
        if length < size:
            break
    return end


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _set_buffers(sock: socket.socket, size: int) -> None:
    # Bursts of hundreds of packets arrive between two wakeups; a small
    # receive buffer turns scheduling stalls into loss. The FORCE variants
    # (root only) go past net.core.rmem_max/wmem_max.
    for option, force in (
        (socket.SO_RCVBUF, SO_RCVBUFFORCE),
        (socket.SO_SNDBUF, SO_SNDBUFFORCE),
    ):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
        if sock.getsockopt(socket.SOL_SOCKET, option) >= size:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            logger.debug("socket buffer limited by net.core.rmem_max/wmem_max")
