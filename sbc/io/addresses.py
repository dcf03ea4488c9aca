"""Peer addresses as the SIP layers see them."""

from __future__ import annotations

import ipaddress
from typing import Any

Address = tuple[str, int]
"""(host, port); an IPv6 host without brackets and without a scope."""


def address_of(sockaddr: Any) -> Address:
    """(host, port) from a socket address; drops IPv6 flow info and scope."""
    return str(sockaddr[0]), int(sockaddr[1])


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def format_host_port(host: str, port: int) -> str:
    """``192.0.2.1:5060`` or ``[2001:db8::1]:5060`` (RFC 3261 §25.1 hostport)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
