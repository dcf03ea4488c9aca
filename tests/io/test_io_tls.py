"""SIP over TLS on loopback with a certificate made in the test."""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest
from io_helpers import (
    bound,
    closed_within,
    hostport,
    parse_response,
    read_message,
    request_bytes,
    run,
    serving,
    write_self_signed,
)

from sbc.io.counters import DropReason
from sbc.sip.message import Headers, Request
from sbc.sip.parser import parse_message

FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return write_self_signed(tmp_path_factory.mktemp("tls"))


def client_context(certificate):
    context = ssl.create_default_context(cafile=str(certificate[0]))
    return context


def tls_settings(certificate, **extra):
    cert, key = certificate
    return {"tls_cert": cert, "tls_key": key, **extra}


async def connect_tls(endpoint, certificate, host="127.0.0.1"):
    return await asyncio.open_connection(
        *bound(endpoint, "TLS", ":" in host), ssl=client_context(certificate)
    )


def tls_via(writer, branch):
    local = writer.get_extra_info("sockname")
    return f"SIP/2.0/TLS {hostport(local[0], local[1])};branch={branch}"


@pytest.mark.parametrize("host", FAMILIES)
def test_options_over_tls_answered_200(certificate, host):
    async def scenario():
        async with serving(f"tls:{host}", **tls_settings(certificate)) as endpoint:
            reader, writer = await connect_tls(endpoint, certificate, host)

            writer.write(request_bytes("OPTIONS", via=tls_via(writer, "z9hG4bKtls")))
            response = parse_response(await read_message(reader))

            assert response.status == 200
            assert response.top_via.transport == "TLS"
            assert response.top_via.received == host
            writer.close()

    run(scenario())


def test_keepalive_over_tls_answered(certificate):
    async def scenario():
        async with serving("tls:127.0.0.1", **tls_settings(certificate)) as endpoint:
            reader, writer = await connect_tls(endpoint, certificate)

            writer.write(b"\r\n\r\n")
            pong = await asyncio.wait_for(reader.readexactly(2), 2)

            assert pong == b"\r\n"
            writer.close()

    run(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(os.urandom(2048), id="random"),
        # An SSLv2-style ClientHello header announcing 4,095 more bytes.
        pytest.param(b"\x8f\xff\x01" + bytes(2045), id="sslv2-long-record"),
        pytest.param(
            b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n", id="plain-sip"
        ),
        pytest.param(b"\x16\x03\x01\x00\x05hello", id="truncated-record"),
    ],
)
def test_tls_handshake_garbage_closes_connection_and_is_counted(certificate, garbage):
    # Garbage that happens to start like a record (an SSLv2-style header
    # with a long length, say) leaves OpenSSL waiting for the rest: that
    # connection goes at the handshake timeout instead, kept short here.
    settings = tls_settings(certificate, connect_timeout=1.0)

    async def scenario():
        async with serving("tls:127.0.0.1", **settings) as endpoint:
            reader, writer = await asyncio.open_connection(*bound(endpoint, "TLS"))

            writer.write(garbage)
            closed = await closed_within(reader, timeout=3)
            tls_reader, tls_writer = await connect_tls(endpoint, certificate)
            tls_writer.write(
                request_bytes("OPTIONS", via=tls_via(tls_writer, "z9hG4bKok"))
            )
            response = parse_response(await read_message(tls_reader))

            assert closed
            assert endpoint.counters["TLS"].drops[DropReason.TLS_HANDSHAKE_FAILED] == 1
            assert response.status == 200
            tls_writer.close()

    run(scenario())


def test_stalled_tls_handshake_closed_after_connect_timeout(certificate):
    async def scenario():
        settings = tls_settings(certificate, connect_timeout=0.4)
        async with serving("tls:127.0.0.1", **settings) as endpoint:
            reader, _ = await asyncio.open_connection(*bound(endpoint, "TLS"))

            assert await closed_within(reader, timeout=3)
            assert endpoint.counters["TLS"].drops[DropReason.TLS_HANDSHAKE_FAILED] == 1

    run(scenario())


def test_outbound_request_over_tls_verifies_peer(certificate):
    async def scenario():
        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def accept(reader, writer):
            received.put_nowait(await read_message(reader))
            await reader.read()
            writer.close()

        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(*certificate)
        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        settings = tls_settings(certificate, tls_ca=certificate[0])
        async with serving("tls:127.0.0.1", **settings) as endpoint:
            request = Request(
                "OPTIONS", f"sip:127.0.0.1:{port};transport=tls", outbound_headers()
            )

            await endpoint.send_request(request, ("127.0.0.1", port), "TLS")
            sent = parse_message(await asyncio.wait_for(received.get(), 5))

            assert sent.top_via.transport == "TLS"
            assert sent.top_via.sent_by == bound(endpoint, "TLS")
        server.close()

    run(scenario())


def test_outbound_tls_to_untrusted_peer_fails(certificate, tmp_path):
    async def scenario():
        other = write_self_signed(tmp_path)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(*other)
        server = await asyncio.start_server(
            lambda r, w: None, "127.0.0.1", 0, ssl=server_context
        )
        port = server.sockets[0].getsockname()[1]
        settings = tls_settings(certificate, tls_ca=certificate[0])
        async with serving("tls:127.0.0.1", **settings) as endpoint:
            request = Request("OPTIONS", f"sip:127.0.0.1:{port}", outbound_headers())

            with pytest.raises((OSError, ConnectionError)):
                await endpoint.send_request(request, ("127.0.0.1", port), "TLS")
        server.close()

    run(scenario())


def outbound_headers():
    return Headers(
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:sbc@sbc.example.com>;tag=out1"),
            ("To", "<sip:peer@example.com>"),
            ("Call-ID", "outbound-1@sbc.example.com"),
            ("CSeq", "1 OPTIONS"),
        ]
    )
