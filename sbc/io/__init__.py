"""SIP transports on asyncio (UDP, TCP, TLS) and the glue to the SIP engines."""

from sbc.io.endpoint import SipEndpoint
from sbc.io.settings import ListenSpec, TransportSettings, parse_listen_spec

__all__ = ["ListenSpec", "SipEndpoint", "TransportSettings", "parse_listen_spec"]
