"""SIP over TCP on loopback: framing, keepalive, reuse, idle close, bad input."""

from __future__ import annotations

import asyncio

import pytest
from io_helpers import (
    UdpPeer,
    bound,
    closed_within,
    hostport,
    parse_response,
    read_message,
    request_bytes,
    run,
    serving,
)

from sbc.io.counters import DropReason
from sbc.sip.core import CorePolicy
from sbc.sip.message import Headers, Request
from sbc.sip.parser import parse_message

FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


async def connect(endpoint, host="127.0.0.1"):
    return await asyncio.open_connection(*bound(endpoint, "TCP", ":" in host))


def tcp_via(writer, branch):
    local = writer.get_extra_info("sockname")
    return f"SIP/2.0/TCP {hostport(local[0], local[1])};branch={branch}"


@pytest.mark.parametrize("host", FAMILIES)
def test_options_over_tcp_answered_on_same_connection(host):
    async def scenario():
        async with serving(f"tcp:{host}") as endpoint:
            reader, writer = await connect(endpoint, host)

            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKt1")))
            response = parse_response(await read_message(reader))

            assert response.status == 200
            assert response.top_via.received == host
            assert endpoint.open_connections == 1
            writer.close()

    run(scenario())


def test_framing_one_byte_at_a_time():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            data = request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKbytes"))

            for index in range(len(data)):
                writer.write(data[index : index + 1])
                await writer.drain()
            response = parse_response(await read_message(reader))

            assert response.status == 200
            writer.close()

    run(scenario())


def test_framing_many_messages_in_one_write():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            body = b"v=0\r\n"
            messages = [
                request_bytes(
                    "OPTIONS",
                    via=tcp_via(writer, f"z9hG4bKm{n}"),
                    body=body,
                    extra="Content-Type: application/sdp\r\n",
                )
                for n in range(5)
            ]

            writer.write(b"".join(messages))
            branches = [
                parse_response(await read_message(reader)).top_via.branch
                for _ in range(5)
            ]

            assert branches == [f"z9hG4bKm{n}" for n in range(5)]
            writer.close()

    run(scenario())


def test_double_crlf_keepalive_answered_with_crlf():
    # RFC 5626 §4.4.1: ping CRLFCRLF, pong CRLF; a lone CRLF is not answered.
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)

            writer.write(b"\r\n\r\n")
            pong = await asyncio.wait_for(reader.readexactly(2), 2)
            writer.write(b"\r\n")
            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKka")))
            response = parse_response(await read_message(reader))

            assert pong == b"\r\n"
            assert response.status == 200
            assert endpoint.counters["TCP"].keepalives == 1
            writer.close()

    run(scenario())


def test_c03_conflicting_content_length_over_tcp_closes_connection():
    # C03 (c) over TCP: framing cannot be trusted; the connection is closed.
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            data = request_bytes(
                "OPTIONS",
                via=tcp_via(writer, "z9hG4bKc03c"),
                extra="content-length: 37\r\n",
                content_length=0,
            )

            writer.write(data + b"x" * 37)

            assert await closed_within(reader)
            assert endpoint.counters["TCP"].drops[DropReason.FRAMING_ERROR] == 1
            assert endpoint.sip_counters.requests == 0

    run(scenario())


def test_missing_content_length_on_stream_closes_connection():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            data = request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKnocl"))
            data = data.replace(b"Content-Length: 0\r\n", b"")

            writer.write(data)

            assert await closed_within(reader)
            assert endpoint.counters["TCP"].drops[DropReason.FRAMING_ERROR] == 1

    run(scenario())


def test_oversized_header_block_closes_connection():
    async def scenario():
        async with serving("tcp:127.0.0.1", max_header_bytes=2048) as endpoint:
            reader, writer = await connect(endpoint)

            writer.write(b"OPTIONS sip:x SIP/2.0\r\nX-Long: " + b"a" * 4096)

            assert await closed_within(reader)
            assert endpoint.counters["TCP"].drops[DropReason.FRAMING_ERROR] == 1

    run(scenario())


def test_bad_request_on_stream_answered_400_and_connection_kept():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            bad = request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKbad")).replace(
                b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"
            )

            writer.write(bad)
            first = parse_response(await read_message(reader))
            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKgood")))
            second = parse_response(await read_message(reader))

            assert first.status == 400
            assert "CSeq" in first.reason
            assert second.status == 200
            writer.close()

    run(scenario())


def test_half_open_connection_closed_after_idle_timeout():
    async def scenario():
        async with serving("tcp:127.0.0.1", idle_timeout=0.4) as endpoint:
            reader, writer = await connect(endpoint)

            writer.write(b"OPTIONS sip:sbc.example.com SIP/2.0\r\nVia: SIP/2.0/TCP")

            assert await closed_within(reader, timeout=3)
            assert endpoint.counters["TCP"].drops[DropReason.IDLE_TIMEOUT] == 1
            assert endpoint.open_connections == 0

    run(scenario())


def test_peer_closing_mid_message_does_not_disturb_listener():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            _, writer = await connect(endpoint)
            writer.write(b"INVITE sip:x SIP/2.0\r\nContent-Length: 100\r\n\r\nshort")
            writer.transport.abort()
            reader, writer = await connect(endpoint)

            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKnext")))
            response = parse_response(await read_message(reader))

            assert response.status == 200
            writer.close()

    run(scenario())


def test_connection_limit_refuses_extra_connections():
    async def scenario():
        async with serving("tcp:127.0.0.1", max_connections=2) as endpoint:
            kept = [await connect(endpoint) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, _ = await connect(endpoint)

            assert await closed_within(reader)
            assert endpoint.counters["TCP"].drops[DropReason.CONNECTION_LIMIT] == 1
            for _, writer in kept:
                writer.close()

    run(scenario())


def test_response_reopens_connection_to_sent_by_when_original_closed():
    # RFC 3261 §18.2.2: the connection is gone, so the 480 goes over a new
    # connection to received on the sent-by port.
    async def scenario():
        policy = CorePolicy(no_route_delay=0.3)
        async with serving("tcp:127.0.0.1", policy=policy) as endpoint:
            arrived: asyncio.Queue[bytes] = asyncio.Queue()

            async def accept(reader, writer):
                arrived.put_nowait(await read_message(reader))
                writer.close()

            server = await asyncio.start_server(accept, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await connect(endpoint)
            via = f"SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKreopen"
            writer.write(request_bytes("INVITE", via=via))
            assert parse_response(await read_message(reader)).status == 100
            writer.close()

            response = parse_response(await asyncio.wait_for(arrived.get(), 5))

            assert response.status == 480
            server.close()

    run(scenario())


def test_tcp_request_and_udp_request_counted_per_transport():
    async def scenario():
        async with serving("tcp:127.0.0.1", "udp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            peer = await UdpPeer.open()
            udp_via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKu"

            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKt")))
            await read_message(reader)
            peer.send(request_bytes("OPTIONS", via=udp_via), bound(endpoint, "UDP"))
            await peer.receive_response()

            assert endpoint.counters["TCP"].received == 1
            assert endpoint.counters["UDP"].received == 1
            writer.close()
            peer.close()

    run(scenario())


def outbound_options(call_id):
    return Request(
        "OPTIONS",
        "sip:peer.example.com",
        Headers(
            [
                ("Max-Forwards", "70"),
                ("From", "<sip:sbc@sbc.example.com>;tag=o1"),
                ("To", "<sip:peer@peer.example.com>"),
                ("Call-ID", call_id),
                ("CSeq", "1 OPTIONS"),
            ]
        ),
    )


def test_request_to_peer_reuses_its_inbound_connection():
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            writer.write(request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKin")))
            await read_message(reader)
            peer = writer.get_extra_info("sockname")

            await endpoint.send_request(
                outbound_options("reuse-1"), (peer[0], peer[1]), "TCP"
            )
            request = parse_message(await read_message(reader))

            assert request.call_id == "reuse-1"
            assert endpoint.open_connections == 1
            writer.close()

    run(scenario())


def test_via_alias_lets_requests_to_sent_by_reuse_the_connection():
    # RFC 5923: with ;alias the connection also serves requests to sent-by.
    async def scenario():
        async with serving("tcp:127.0.0.1") as endpoint:
            reader, writer = await connect(endpoint)
            via = "SIP/2.0/TCP 127.0.0.1:5999;alias;branch=z9hG4bKalias"
            writer.write(request_bytes("OPTIONS", via=via))
            await read_message(reader)

            await endpoint.send_request(
                outbound_options("alias-1"), ("127.0.0.1", 5999), "TCP"
            )
            request = parse_message(await read_message(reader))

            assert request.call_id == "alias-1"
            assert endpoint.open_connections == 1
            writer.close()

    run(scenario())


def test_slow_message_closed_after_message_timeout_slowloris():
    # One byte at a time, each well inside the idle timeout: only a deadline
    # on the whole message stops a peer holding a connection slot for ever.
    async def scenario():
        async with serving(
            "tcp:127.0.0.1", idle_timeout=5.0, message_timeout=0.5
        ) as endpoint:
            reader, writer = await connect(endpoint)
            message = request_bytes("OPTIONS", via=tcp_via(writer, "z9hG4bKslow"))

            for byte in message[:40]:
                if writer.is_closing() or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

            assert await closed_within(reader, timeout=3)
            assert endpoint.counters["TCP"].drops[DropReason.MESSAGE_TIMEOUT] == 1
            assert endpoint.open_connections == 0

    run(scenario())


def test_slow_message_deadline_restarts_with_each_message_pipelined():
    # Whole messages that each arrive in time keep the connection open, however
    # long the connection itself lives.
    async def scenario():
        async with serving(
            "tcp:127.0.0.1", idle_timeout=5.0, message_timeout=0.6
        ) as endpoint:
            reader, writer = await connect(endpoint)

            for index in range(4):
                message = request_bytes(
                    "OPTIONS", via=tcp_via(writer, f"z9hG4bKpace{index}")
                )
                half = len(message) // 2
                writer.write(message[:half])
                await asyncio.sleep(0.3)
                writer.write(message[half:])
                response = parse_response(await read_message(reader))
                assert response.status == 200

            assert endpoint.counters["TCP"].drops[DropReason.MESSAGE_TIMEOUT] == 0
            writer.close()

    run(scenario())
