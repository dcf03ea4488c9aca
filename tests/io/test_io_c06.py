"""C06: a large request toward a UDP next hop goes over TCP (RFC 3261 §18.1.1)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from io_helpers import UdpPeer, bound, read_message, run, serving

from sbc.log import TRANSPORT_LOGGER
from sbc.sip.message import Headers, Request, make_response
from sbc.sip.parser import parse_message


def invite(padding: int) -> Request:
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:+15550101@sbc.example.com>;tag=c06"),
            ("To", "<sip:+15550100@trunk.example.com>"),
            ("Call-ID", "c06@sbc.example.com"),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:+15550101@127.0.0.1>"),
            ("Content-Type", "application/sdp"),
        ]
    )
    body = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        + b"a=x-pad\r\n" * padding
    )
    return Request("INVITE", "sip:+15550100@trunk.example.com", headers, body)


def small_request() -> Request:
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:+15550101@sbc.example.com>;tag=c06"),
            ("To", "<sip:+15550100@trunk.example.com>;tag=far"),
            ("Call-ID", "c06@sbc.example.com"),
            ("CSeq", "2 OPTIONS"),
        ]
    )
    return Request("OPTIONS", "sip:+15550100@trunk.example.com", headers)


def free_port_pair() -> tuple[socket.socket, int]:
    """A TCP listening socket whose port is also free for UDP."""
    for _ in range(50):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            tcp.close()
            continue
        finally:
            probe.close()
        return tcp, port
    raise RuntimeError("no port free for both TCP and UDP")


def test_c06_large_request_goes_over_tcp_and_cancel_follows_it():
    async def scenario():
        tcp, port = free_port_pair()
        tcp.listen()
        udp_peer = await UdpPeer.open("127.0.0.1", port)
        connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        connections = asyncio.Queue()
        server = await asyncio.start_server(
            lambda r, w: connections.put_nowait((r, w)), sock=tcp
        )
        async with serving("udp:127.0.0.1", "tcp:127.0.0.1") as endpoint:
            request = invite(padding=150)

            key = await endpoint.send_request(request, ("127.0.0.1", port), "UDP")
            reader, writer = await asyncio.wait_for(connections.get(), 5)
            received = parse_message(await read_message(reader))
            writer.write(make_response(received, 100).to_bytes())
            await asyncio.sleep(0.1)
            endpoint.send_cancel(key)
            cancel = parse_message(await read_message(reader))

            assert len(received.to_bytes()) > 1300
            assert received.top_via.transport == "TCP"
            assert received.top_via.sent_by == bound(endpoint, "TCP")
            assert cancel.method == "CANCEL"
            assert cancel.uri == received.uri
            assert str(cancel.top_via) == str(received.top_via)
            assert await udp_peer.nothing_within(0.2)

            # The 487 is ACKed on the same connection (RFC 3261 §17.1.1.3).
            writer.write(make_response(cancel, 200, to_tag="t").to_bytes())
            writer.write(make_response(received, 487, to_tag="t").to_bytes())
            ack = parse_message(await read_message(reader))
            assert (ack.method, ack.top_via.branch) == ("ACK", received.top_via.branch)

            # A later small request keeps to UDP.
            await endpoint.send_request(small_request(), ("127.0.0.1", port), "UDP")
            data, _ = await udp_peer.receive()
            small = parse_message(data)
            assert small.method == "OPTIONS"
            assert small.top_via.transport == "UDP"
            writer.close()
        server.close()
        udp_peer.close()

    run(scenario())


def padded_to(request: Request, size: int, endpoint) -> Request:
    """Pad ``request`` so that, with the Via the endpoint adds, it is ``size`` bytes."""
    port = bound(endpoint, "UDP")[1]
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK0123456789abcdef;rport\r\n"
    missing = size - len(request.to_bytes()) - len(via)
    request.headers.add("X-Pad", "p" * (missing - len("X-Pad: \r\n")))
    return request


@pytest.mark.parametrize(("size", "transport"), [(1300, "UDP"), (1301, "TCP")])
def test_c06_size_limit_is_1300_bytes_with_our_via(size, transport):
    async def scenario():
        tcp, port = free_port_pair()
        tcp.listen()
        udp_peer = await UdpPeer.open("127.0.0.1", port)
        arrived: asyncio.Queue[bytes] = asyncio.Queue()

        async def accept(reader, writer):
            arrived.put_nowait(await read_message(reader))

        server = await asyncio.start_server(accept, sock=tcp)
        async with serving("udp:127.0.0.1", "tcp:127.0.0.1") as endpoint:
            request = padded_to(invite(padding=0), size, endpoint)

            await endpoint.send_request(request, ("127.0.0.1", port), "UDP")
            if transport == "UDP":
                data, _ = await udp_peer.receive()
            else:
                data = await asyncio.wait_for(arrived.get(), 5)

            assert len(data) == size
            assert parse_message(data).top_via.transport == transport
        server.close()
        udp_peer.close()

    run(scenario())


def test_c06_tcp_refused_falls_back_to_udp_and_logs(caplog):
    async def scenario():
        udp_peer = await UdpPeer.open()
        async with serving("udp:127.0.0.1", "tcp:127.0.0.1") as endpoint:
            with caplog.at_level(logging.WARNING, logger=TRANSPORT_LOGGER):
                await endpoint.send_request(
                    invite(padding=150), udp_peer.address, "UDP"
                )
            data, _ = await udp_peer.receive()
            received = parse_message(data)

            assert len(data) > 1300
            assert received.top_via.transport == "UDP"
            assert any("TCP impossible" in r.getMessage() for r in caplog.records)
            # The fallback is a normal UDP transaction: Timer A resends it.
            again, _ = await udp_peer.receive(timeout=2)
            assert again == data
        udp_peer.close()

    run(scenario())


def test_c06_final_response_on_tcp_acked_on_same_connection():
    # The upgraded transaction is a TCP one: its final response comes back
    # on the connection, is ACKed there, and nothing is resent over UDP.
    async def scenario():
        tcp, port = free_port_pair()
        tcp.listen()
        udp_peer = await UdpPeer.open("127.0.0.1", port)
        connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        connections = asyncio.Queue()
        server = await asyncio.start_server(
            lambda r, w: connections.put_nowait((r, w)), sock=tcp
        )
        async with serving("udp:127.0.0.1", "tcp:127.0.0.1") as endpoint:
            await endpoint.send_request(invite(padding=150), ("127.0.0.1", port), "UDP")
            reader, writer = await asyncio.wait_for(connections.get(), 5)
            received = parse_message(await read_message(reader))
            final = make_response(received, 486, to_tag="busy")

            writer.write(final.to_bytes())
            ack = parse_message(await read_message(reader))

            assert ack.method == "ACK"
            assert endpoint.sip_counters.responses == 1
            assert await udp_peer.nothing_within(0.6)
            writer.close()
        server.close()
        udp_peer.close()

    run(scenario())
