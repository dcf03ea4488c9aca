"""SIP over UDP on loopback: answers, Via handling, routing, bad input."""

from __future__ import annotations

import pytest
from io_helpers import UdpPeer, bound, hostport, request_bytes, run, serving

from sbc.io.counters import DropReason
from sbc.sip.core import CorePolicy

FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]


@pytest.mark.parametrize("host", FAMILIES)
def test_options_over_udp_answered_200(host):
    async def scenario():
        async with serving(f"udp:{host}") as endpoint:
            peer = await UdpPeer.open(host)
            via = f"SIP/2.0/UDP {hostport(*peer.address)};branch=z9hG4bKu1"

            peer.send(
                request_bytes("OPTIONS", via=via), bound(endpoint, "UDP", ":" in host)
            )
            response = await peer.receive_response()

            assert response.status == 200
            assert response.top_via.received == host
            assert response.top_via.branch == "z9hG4bKu1"
            peer.close()

    run(scenario())


def test_c08_rport_filled_and_response_sent_to_source_port():
    # C08 (a): rport asked for; answer to the source address and port.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            source = await UdpPeer.open()
            sent_by = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{sent_by.address[1]};rport;branch=z9hG4bKc08a"

            source.send(request_bytes("OPTIONS", via=via), bound(endpoint, "UDP"))
            response = await source.receive_response()

            assert response.top_via.rport == source.address[1]
            assert response.top_via.received == "127.0.0.1"
            assert await sent_by.nothing_within(0.3)
            source.close()
            sent_by.close()

    run(scenario())


def test_c08_received_added_and_response_sent_to_sent_by_port():
    # C08 (b): no rport, sent-by host differs from the source; answer to
    # received on the sent-by port, never to the source port.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            source = await UdpPeer.open()
            at_sent_by_port = await UdpPeer.open("127.0.0.1")
            port = at_sent_by_port.address[1]
            via = f"SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bKc08b"

            source.send(request_bytes("OPTIONS", via=via), bound(endpoint, "UDP"))
            response = await at_sent_by_port.receive_response()

            assert response.top_via.received == "127.0.0.1"
            assert response.top_via.rport is None
            assert await source.nothing_within(0.3)
            source.close()
            at_sent_by_port.close()

    run(scenario())


def test_c08_rport_with_other_sent_by_host_answers_source():
    # C08 (c): as (b) with rport: the source address and port win.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            source = await UdpPeer.open()
            via = "SIP/2.0/UDP 127.0.0.2:5999;rport;branch=z9hG4bKc08c"

            source.send(request_bytes("OPTIONS", via=via), bound(endpoint, "UDP"))
            response = await source.receive_response()

            assert response.top_via.received == "127.0.0.1"
            assert response.top_via.rport == source.address[1]
            source.close()

    run(scenario())


def test_c08_received_added_even_when_equal_to_sent_by():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKc08d"

            peer.send(request_bytes("OPTIONS", via=via), bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert response.top_via.params.get("received") == "127.0.0.1"
            peer.close()

    run(scenario())


def test_lower_vias_returned_unchanged():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            top = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKtop"
            lower = "SIP/2.0/TCP proxy.example.com ; branch = z9hG4bKlower"
            data = request_bytes("OPTIONS", via=f"{top}, {lower}")

            peer.send(
                data.replace(
                    b"Max-Forwards", f"Via: {lower}2\r\nMax-Forwards".encode()
                ),
                bound(endpoint, "UDP"),
            )
            response = await peer.receive_response()

            vias = response.headers.values("Via")
            assert vias[1:] == [lower, lower + "2"]
            assert response.headers.get_all("Via")[1] == lower + "2"
            peer.close()

    run(scenario())


@pytest.mark.parametrize("size", [9000, 65000])
def test_c06_large_datagram_received(size):
    # C06: a 9 kB datagram works; so does one near the 65,535-byte limit.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKbig{size}"
            padding = "X-Padding: " + "p" * 200 + "\r\n"
            data = request_bytes(
                "OPTIONS", via=via, extra=padding * (size // len(padding))
            )

            peer.send(data, bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert len(data) > size - len(padding)
            assert response.status == 200
            peer.close()

    run(scenario())


def test_c03_content_length_too_large_answered_400():
    # C03 (a): Content-Length 9999 with a 150-byte body over UDP.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKc03a"
            body = b"v=0\r\n" + b"a=x\r\n" * 29
            data = request_bytes("INVITE", via=via, body=body, content_length=9999)

            peer.send(data, bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert response.status == 400
            assert "Content-Length" in response.reason
            assert response.top_via.received == "127.0.0.1"
            assert endpoint.counters["UDP"].drops[DropReason.ANSWERED_ERROR] == 1
            assert endpoint.sip_counters.requests == 0
            peer.close()

    run(scenario())


def test_c03_negative_content_length_answered_error():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKc03b"
            data = request_bytes(
                "INVITE", via=via, body=b"v=0\r\n", content_length=-999
            )

            peer.send(data, bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert response.status == 400
            assert endpoint.sip_counters.requests == 0
            peer.close()

    run(scenario())


def test_c03_conflicting_content_length_over_udp_not_processed():
    # C03 (c) over UDP: discard or 400; never an OPTIONS 200.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKc03c"
            data = request_bytes(
                "OPTIONS", via=via, extra="content-length: 37\r\n", content_length=0
            )

            peer.send(data, bound(endpoint, "UDP"))

            try:
                response = await peer.receive_response(timeout=0.5)
            except TimeoutError:
                response = None
            assert response is None or response.status == 400
            assert endpoint.sip_counters.requests == 0
            peer.close()

    run(scenario())


def test_c04_h_zone_index_in_via_answered_400_to_the_source():
    # C04 (h): a top Via naming an IPv6 address with a zone index cannot be
    # read; the 400 goes back to where the datagram came from.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = "SIP/2.0/UDP [fe80::1%4];branch=z9hG4bKc04h"
            data = request_bytes("OPTIONS", via=via)

            peer.send(data, bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert response.status == 400
            assert response.headers.get("Via") == via
            assert endpoint.counters["UDP"].drops[DropReason.ANSWERED_ERROR] == 1
            assert endpoint.sip_counters.requests == 0
            peer.close()

    run(scenario())


def test_c03_huge_cseq_answered_400():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKc03d"
            data = request_bytes("REGISTER", via=via).replace(
                b"CSeq: 1 REGISTER", b"CSeq: 36893488147419103232 REGISTER"
            )

            peer.send(data, bound(endpoint, "UDP"))
            response = await peer.receive_response()

            assert response.status == 400
            assert "CSeq" in response.reason
            peer.close()

    run(scenario())


GARBAGE = [
    pytest.param(b"\x00\xff" * 700, id="binary"),
    pytest.param(b"INVITE\r\n\r\n", id="bare-method"),
    pytest.param(b"SIP/2.0 200\r\n\r\n", id="bare-status"),
    pytest.param(b"OPTIONS sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n", id="bad-via"),
    pytest.param(b"\r\n\r\n\r\n", id="only-crlf"),
    pytest.param(b"A" * 65000, id="huge-token"),
    pytest.param(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKr\r\n\r\n",
        id="short-response",
    ),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_datagram_dropped_and_listener_keeps_serving(data):
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            destination = bound(endpoint, "UDP")

            peer.send(data, destination)
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKafter"
            peer.send(request_bytes("OPTIONS", via=via), destination)
            response = await peer.receive_response()

            assert response.status == 200
            assert response.top_via.branch == "z9hG4bKafter"
            counters = endpoint.counters["UDP"]
            assert counters.received == 2
            peer.close()

    run(scenario())


def test_malformed_response_discarded_and_counted():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKm\r\nCSeq: x\r\n\r\n"

            peer.send(data, bound(endpoint, "UDP"))

            assert await peer.nothing_within(0.3)
            assert endpoint.counters["UDP"].drops[DropReason.MALFORMED_RESPONSE] == 1
            peer.close()

    run(scenario())


def test_unanswerable_request_dropped_and_counted():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            data = b"OPTIONS sip:sbc.example.com SIP/2.0\r\nMax-Forwards: 70\r\n\r\n"

            peer.send(data, bound(endpoint, "UDP"))

            assert await peer.nothing_within(0.3)
            assert endpoint.counters["UDP"].drops[DropReason.UNPARSEABLE_REQUEST] == 1
            peer.close()

    run(scenario())


def test_retransmitted_request_absorbed_and_counted():
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKagain"
            data = request_bytes("OPTIONS", via=via)

            for _ in range(3):
                peer.send(data, bound(endpoint, "UDP"))
                response = await peer.receive_response()
                assert response.status == 200

            assert endpoint.sip_counters.requests == 3
            assert endpoint.sip_counters.retransmissions_absorbed == 2
            peer.close()

    run(scenario())


def test_invite_final_retransmitted_until_ack_then_absorbed():
    # Timer G resends the 480 until the ACK, which the transaction absorbs.
    async def scenario():
        async with serving("udp:127.0.0.1") as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKg"
            peer.send(request_bytes("INVITE", via=via), bound(endpoint, "UDP"))

            statuses = [(await peer.receive_response()).status for _ in range(3)]
            final = await peer.receive_response(timeout=2.0)
            ack = request_bytes("ACK", via=via, to=str(final.to))
            peer.send(ack, bound(endpoint, "UDP"))

            assert statuses == [100, 480, 480]
            assert final.status == 480
            assert await peer.nothing_within(1.2)
            assert endpoint.sip_counters.acks_absorbed == 1
            peer.close()

    run(scenario())


def test_cancel_pending_invite_over_udp():
    async def scenario():
        policy = CorePolicy(no_route_delay=30.0)
        async with serving("udp:127.0.0.1", policy=policy) as endpoint:
            peer = await UdpPeer.open()
            via = f"SIP/2.0/UDP 127.0.0.1:{peer.address[1]};branch=z9hG4bKcx"
            peer.send(request_bytes("INVITE", via=via), bound(endpoint, "UDP"))
            assert (await peer.receive_response()).status == 100

            peer.send(request_bytes("CANCEL", via=via), bound(endpoint, "UDP"))
            got = {}
            for _ in range(2):
                response = await peer.receive_response()
                got[response.cseq.method] = response.status

            assert got == {"CANCEL": 200, "INVITE": 487}
            peer.close()

    run(scenario())
