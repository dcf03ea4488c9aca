"""A TUN device: whole IP packets in and out of the kernel's routing.

The device is created by the TUNSETIFF ioctl on /dev/net/tun and lives as
long as the file descriptor, so a crashed gateway leaves no interface behind;
pyroute2 then sets its MTU, addresses and routes. Both steps need
CAP_NET_ADMIN, and :class:`CapabilityMissing` names it when it is missing.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable, Iterable
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .counters import PathCounters, PathDrop
from .errors import CapabilityMissing, DataPlaneError

logger = logging.getLogger("ipsec.dataplane")

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
_IFNAMSIZ = 16
_READ_BUDGET = 256
DEFAULT_MTU = 1400

Interface = IPv4Interface | IPv6Interface
Network = IPv4Network | IPv6Network
PacketHandler = Callable[[bytes], None]


class TunDevice:
    """An open TUN device delivering packets to ``on_packet`` once attached."""

    def __init__(self, fd: int, name: str, mtu: int) -> None:
        self.fd = fd
        self.name = name
        self.mtu = mtu
        self.counters = PathCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_packet: PacketHandler | None = None

    @classmethod
    async def create(
        cls,
        name: str,
        *,
        mtu: int = DEFAULT_MTU,
        addresses: Iterable[Interface] = (),
        routes: Iterable[Network] = (),
        route_source: IPv4Address | IPv6Address | None = None,
    ) -> TunDevice:
        """Create, configure and bring up a TUN device named ``name``.

        ``routes`` send those networks into the device; ``route_source``
        makes local traffic to them leave from that address (a LAN-side one
        the policies cover) rather than from the outer interface's.
        """
        fd = _open_tun(name)
        try:
            # pyroute2 runs its own asyncio loop and cannot share uvloop (no
            # netlink datagram endpoints there), so it gets a worker thread.
            await asyncio.get_running_loop().run_in_executor(
                None, _configure, name, mtu, list(addresses), list(routes), route_source
            )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, name, mtu)

    def attach(self, loop: asyncio.AbstractEventLoop, on_packet: PacketHandler) -> None:
        """Start reading: ``on_packet(packet)`` for every packet routed here."""
        self._loop = loop
        self._on_packet = on_packet
        loop.add_reader(self.fd, self._on_readable)

    def write(self, packet: bytes) -> None:
        """Hand a decrypted packet back to the kernel's IP stack."""
        try:
            os.write(self.fd, packet)
        except OSError as error:
            logger.debug("tun %s write failed: %s", self.name, error)
            self.counters.drop(PathDrop.SEND_FAILED)
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(packet)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        os.close(self.fd)

    def _on_readable(self) -> None:
        # Drain a bounded burst; the read size covers any packet the MTU lets
        # the kernel route here.
        counters, on_packet = self.counters, self._on_packet
        if on_packet is None:
            return
        size = self.mtu + 64
        for _ in range(_READ_BUDGET):
            try:
                packet = os.read(self.fd, size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.debug("tun %s read failed: %s", self.name, error)
                return
            counters.packets_in += 1
            counters.bytes_in += len(packet)
            on_packet(packet)


def _open_tun(name: str) -> int:
    if not 0 < len(name) < _IFNAMSIZ:
        raise DataPlaneError(f"interface name {name!r} must have 1-15 characters")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    request = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
    try:
        fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as error:
        os.close(fd)
        if error.errno == errno.EPERM:
            raise CapabilityMissing(
                "CAP_NET_ADMIN", f"creating TUN device {name}"
            ) from error
        raise DataPlaneError(f"TUNSETIFF {name}: {error}") from error
    return fd


def _configure(
    name: str,
    mtu: int,
    addresses: Iterable[Interface],
    routes: Iterable[Network],
    route_source: IPv4Address | IPv6Address | None,
) -> None:
    source = {"prefsrc": str(route_source)} if route_source is not None else {}
    with IPRoute() as ipr:
        try:
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
            for interface in addresses:
                ipr.addr(
                    "add", index=index, address=str(interface.ip),
                    prefixlen=interface.network.prefixlen,
                )  # fmt: skip
            for network in routes:
                ipr.route("add", dst=str(network), oif=index, **source)
        except NetlinkError as error:
            if error.code == errno.EPERM:
                raise CapabilityMissing(
                    "CAP_NET_ADMIN", f"configuring TUN device {name}"
                ) from error
            raise DataPlaneError(f"configuring {name}: {error}") from error
