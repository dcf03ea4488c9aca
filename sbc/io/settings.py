"""Listener and transport settings, as plain typed values.

The CLI builds them today; the YAML configuration and the admin plane will
build the same objects later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

TRANSPORTS = ("UDP", "TCP", "TLS")
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
DEFAULT_IDLE_TIMEOUT = 300.0


class ListenSpecError(ValueError):
    """A ``--listen`` value that does not name a transport, address and port."""


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One socket to listen on."""

    transport: str
    """``UDP``, ``TCP`` or ``TLS``."""
    host: str
    """An IPv4 or IPv6 literal (IPv6 without brackets)."""
    port: int
    """0 asks the kernel for an ephemeral port."""
    ipsec: bool = False
    """Not a kernel socket but a binding in the IPsec data plane's datagram
    channel (UDP only; see sbc.io.ipsec_channel)."""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        inside = " inside IPsec" if self.ipsec else ""
        return f"{self.transport.lower()}:{host}:{self.port}{inside}"


def parse_listen_spec(text: str) -> ListenSpec:
    """Parse ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060`` or ``tls:[::1]``.

    The port defaults to 5060 (5061 for TLS, RFC 3261 §19.1.2).
    """
    scheme, colon, rest = text.partition(":")
    transport = scheme.upper()
    if not colon or transport not in TRANSPORTS:
        raise ListenSpecError(f"{text!r}: expected udp:, tcp: or tls: first")
    host, port_text = _split_host_port(text, rest)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ListenSpecError(f"{text!r}: {host!r} is not an IP address") from None
    # A zone index cannot appear in Via or URIs (RFC 5118 §4.10 policy).
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ListenSpecError(f"{text!r}: scoped IPv6 addresses are not served")
    port = (
        DEFAULT_PORTS[transport] if port_text is None else _parse_port(text, port_text)
    )
    return ListenSpec(transport, host, port)


def _split_host_port(text: str, rest: str) -> tuple[str, str | None]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ListenSpecError(f"{text!r}: malformed [IPv6] address")
        return host, tail[1:] if tail else None
    if rest.count(":") > 1:
        raise ListenSpecError(f"{text!r}: put an IPv6 address in brackets")
    host, colon, port_text = rest.partition(":")
    return host, port_text if colon else None


def _parse_port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ListenSpecError(f"{text!r}: port must be 0-65535")
    return int(port_text)


DEFAULT_LISTEN = (
    ListenSpec("UDP", "127.0.0.1", 5060),
    ListenSpec("TCP", "127.0.0.1", 5060),
    ListenSpec("UDP", "::1", 5060),
    ListenSpec("TCP", "::1", 5060),
)


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """How the SIP transports listen, connect and protect themselves."""

    listen: tuple[ListenSpec, ...] = DEFAULT_LISTEN
    """Sockets to open; at least one."""
    tls_cert: Path | None = None
    """PEM certificate chain served on TLS listeners."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_ca: Path | None = None
    """PEM CA bundle to verify peers on outbound TLS; system CAs when None."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds after which a TCP/TLS connection with no traffic is closed."""
    message_timeout: float = 32.0
    """Seconds a TCP/TLS peer has to finish a message once its first byte
    arrived; bytes trickled inside the idle timeout do not extend it."""
    connect_timeout: float = 5.0
    """Seconds allowed for an outbound TCP connect plus TLS handshake."""
    max_header_bytes: int = 16384
    """Largest header block accepted on a stream before it is closed."""
    max_body_bytes: int = 65536
    """Largest Content-Length accepted on a stream before it is closed."""
    max_connections: int = 4096
    """Open TCP/TLS connections beyond which new inbound ones are refused."""
    udp_receive_buffer: int = 4 * 1024 * 1024
    """SO_RCVBUF asked for on UDP sockets (bursts of up to 65,535-byte
    datagrams must not overflow it)."""
