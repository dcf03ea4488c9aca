"""Loopback peers and message builders for the transport tests.

The peers are plain sockets driven by asyncio on uvloop, the loop the
appliance runs on; every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, cast

import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sbc.io.endpoint import SipEndpoint
from sbc.io.settings import ListenSpec, TransportSettings
from sbc.sip.core import CorePolicy
from sbc.sip.message import Response
from sbc.sip.parser import parse_message

WAIT = 5.0
"""Seconds any single wait in these tests may take before it fails."""


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run one test coroutine on a fresh uvloop loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coroutine, 60))


@contextlib.asynccontextmanager
async def serving(
    *listen: str, policy: CorePolicy | None = None, **settings: Any
) -> AsyncIterator[SipEndpoint]:
    """A started endpoint on the given ``transport:host`` pairs (port 0)."""
    specs = []
    for item in listen:
        transport, _, host = item.partition(":")
        specs.append(ListenSpec(transport.upper(), host, 0))
    endpoint = SipEndpoint(TransportSettings(listen=tuple(specs), **settings), policy)
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.close()


def bound(endpoint: SipEndpoint, transport: str, ipv6: bool = False) -> tuple[str, int]:
    """The address an endpoint listens on for ``transport``."""
    for spec in endpoint.listening:
        if spec.transport == transport and (":" in spec.host) == ipv6:
            return spec.host, spec.port
    raise LookupError(f"no {transport} listener")


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def request_bytes(
    method: str,
    *,
    via: str,
    uri: str = "sip:sbc.example.com",
    call_id: str = "call-1@test",
    cseq: int = 1,
    to: str = "<sip:+15550100@sbc.example.com>",
    extra: str = "",
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    """A request with the mandatory headers; ``via`` is the whole Via value."""
    length = len(body) if content_length is None else content_length
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550101@test.example.com>;tag=from1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    if not isinstance(message, Response):
        raise AssertionError(f"expected a response, got {data[:40]!r}")
    return message


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP socket that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("", 0)

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> UdpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: peer, local_addr=(host, port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
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

    async def receive_response(self, timeout: float = WAIT) -> Response:
        data, _ = await self.receive(timeout)
        return parse_response(data)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.queue.get(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def read_message(reader: asyncio.StreamReader, timeout: float = WAIT) -> bytes:
    """One SIP message from a stream, framed by its Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    body = (
        await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    )
    return head + body


async def closed_within(reader: asyncio.StreamReader, timeout: float = WAIT) -> bool:
    """True when the peer closes the stream (EOF or reset) within ``timeout``.

    Bytes sent before closing (a TLS alert, a last response) are skipped.
    """

    async def until_eof() -> None:
        while await reader.read(65536):
            pass

    try:
        await asyncio.wait_for(until_eof(), timeout)
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    """A P-256 self-signed certificate for localhost, 127.0.0.1 and ::1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sbc.test")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(alt_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file
