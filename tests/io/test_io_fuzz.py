"""Mutated SIP into live listeners: answered or dropped, never a crash.

The invariant (as h11's fuzzing states for HTTP): whatever bytes arrive, the
endpoint answers them, or drops and counts them; no exception other than the
parser's reaches the endpoint's boundary, and the listener keeps serving.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from io_helpers import UdpPeer, bound, read_message, request_bytes, run, serving

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def templates(port: int, transport: str = "UDP") -> list[bytes]:
    via = f"SIP/2.0/{transport} 127.0.0.1:{port};rport;branch=z9hG4bKfuzz"
    invite = request_bytes(
        "INVITE", via=via, extra="Content-Type: application/sdp\r\n", body=SDP
    )
    return [
        invite,
        request_bytes(
            "OPTIONS", via=via, extra="Require: timer\r\nSupported: 100rel\r\n"
        ),
        request_bytes("CANCEL", via=via),
        request_bytes("ACK", via=via, to="<sip:+15550100@sbc.example.com>;tag=x"),
        request_bytes("BYE", via=via, to="<sip:b@example.com>;tag=y"),
        b"SIP/2.0 180 Ringing\r\nVia: "
        + via.encode()
        + b"\r\nFrom: <sip:a@x>;tag=1\r\n"
        b"To: <sip:b@y>;tag=2\r\nCall-ID: fz\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, cut, duplicate a slice, insert separators."""
    buffer = bytearray(data)
    choice = rng.randrange(5)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
    elif choice == 1:
        del buffer[rng.randrange(len(buffer)) :]
    elif choice == 2:
        start = rng.randrange(len(buffer))
        buffer[start:start] = buffer[start : start + rng.randint(1, 200)] * rng.randint(
            1, 20
        )
    elif choice == 3:
        for _ in range(rng.randint(1, 5)):
            buffer.insert(rng.randrange(len(buffer)), rng.choice(b';:,<>"[]\r\n \t=@%'))
    else:
        line_starts = [
            i + 2 for i in range(len(buffer) - 1) if buffer[i : i + 2] == b"\r\n"
        ]
        if line_starts:
            start = rng.choice(line_starts)
            end = buffer.find(b"\r\n", start)
            del buffer[start : end + 2 if end >= 0 else len(buffer)]
    return bytes(buffer)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_datagrams_never_break_the_udp_listener(seed):
    async def scenario():
        rng = random.Random(seed)
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            destination = bound(endpoint, "UDP")
            sources = templates(peer.address[1])

            for index in range(1500):
                peer.send(mutate(rng.choice(sources), rng), destination)
                if index % 50 == 0:
                    await asyncio.sleep(0.01)
            counters = endpoint.counters["UDP"]
            for _ in range(100):
                if counters.received >= 1500:
                    break
                await asyncio.sleep(0.02)
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKstill"
            peer.send(request_bytes("OPTIONS", via=via, call_id="still-1"), destination)
            while (response := await peer.receive_response()).call_id != "still-1":
                pass

            # Loopback may drop a few datagrams of the burst; most must count.
            assert counters.received >= 1400
            assert endpoint.sip_counters.internal_errors == 0
            assert response.status == 200
            peer.close()

    run(scenario())


def test_mutated_stream_never_breaks_the_tcp_listener():
    async def scenario():
        rng = random.Random(7)
        async with serving("tcp:127.0.0.1") as endpoint:
            destination = bound(endpoint, "TCP")
            writer = None
            for _ in range(150):
                if writer is None or writer.is_closing():
                    _, writer = await asyncio.open_connection(*destination)
                port = writer.get_extra_info("sockname")[1]
                writer.write(mutate(rng.choice(templates(port, "TCP")), rng))
                await asyncio.sleep(0.002)
            writer.close()
            reader, writer = await asyncio.open_connection(*destination)
            port = writer.get_extra_info("sockname")[1]
            via = f"SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKstill"
            writer.write(request_bytes("OPTIONS", via=via))
            response = await read_message(reader)

            assert response.startswith(b"SIP/2.0 200 OK\r\n")
            assert endpoint.sip_counters.internal_errors == 0
            writer.close()

    run(scenario())


@pytest.mark.parametrize("header", ["Via", "Subject", "Call-ID"])
def test_bare_cr_in_header_never_raises_inside_the_listener(header):
    # A lone CR survived parsing and made re-stamping the Via raise.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            destination = bound(endpoint, "UDP")
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};rport;branch=z9hG4bKcr"
            data = request_bytes(
                "OPTIONS", via=via, call_id="cr-1", extra="Subject: hi\r\n"
            )
            start = data.index(f"\r\n{header}:".encode()) + 2
            end = data.index(b"\r\n", start)
            peer.send(data[:end] + b"\rX" + data[end:], destination)
            still = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKcr2"
            peer.send(request_bytes("OPTIONS", via=still, call_id="cr-2"), destination)
            statuses = {}
            while "cr-2" not in statuses:
                response = await peer.receive_response()
                statuses[response.call_id] = response.status

            assert endpoint.sip_counters.internal_errors == 0
            assert statuses.get("cr-1", 400) == 400
            assert statuses["cr-2"] == 200
            peer.close()

    run(scenario())


@pytest.mark.parametrize("rest", ["SIP/2.0/UDP <x", 'SIP/2.0/UDP h;p="open'])
def test_bad_second_via_value_on_first_row_never_raises_inside_the_listener(rest):
    # Only the top Via value is checked before the request is stamped; the
    # rest of its row is split then, and that split can fail too.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            destination = bound(endpoint, "UDP")
            top = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};rport;branch=z9hG4bKv2"
            peer.send(
                request_bytes("OPTIONS", via=f"{top}, {rest}", call_id="v2-1"),
                destination,
            )
            still = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKv3"
            peer.send(request_bytes("OPTIONS", via=still, call_id="v2-2"), destination)
            statuses = {}
            while "v2-2" not in statuses:
                response = await peer.receive_response()
                statuses[response.call_id] = response.status

            assert endpoint.sip_counters.internal_errors == 0
            assert statuses.get("v2-1", 400) == 400
            assert statuses["v2-2"] == 200
            peer.close()

    run(scenario())
