"""Asyncio data paths around the sans-IO ESP/AH engine (ipsec.esp).

UDP encapsulation shared with IKE (RFC 3948), an in-process datagram
channel, raw ESP/AH sockets and a TUN gateway, behind the narrow SA and
policy interface of :class:`DataPlane`.
"""

from .counters import PathCounters, PathDrop
from .errors import CapabilityMissing, DataPlaneError, DuplicateSA, UnknownSA
from .plane import Acquire, DataPlane, Transport
from .raw import RawIpSocket
from .tun import TunDevice
from .udp_encap import DatagramKind, UdpEncapSocket, classify

__all__ = [
    "Acquire",
    "CapabilityMissing",
    "DataPlane",
    "DataPlaneError",
    "DatagramKind",
    "DuplicateSA",
    "PathCounters",
    "PathDrop",
    "RawIpSocket",
    "Transport",
    "TunDevice",
    "UdpEncapSocket",
    "UnknownSA",
    "classify",
]
