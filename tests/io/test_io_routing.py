"""Via stamping and response routing (RFC 3261 §18.2, RFC 3581), sans-IO."""

from __future__ import annotations

import pytest

from sbc.io.routing import (
    UDP_SIZE_LIMIT,
    client_via,
    request_transport,
    response_destination,
    stamp_received,
    stamp_request,
)
from sbc.sip.headers import parse_via_value
from sbc.sip.message import Request
from sbc.sip.parser import parse_message


def via(text: str):
    return parse_via_value(text)


def test_c08_rport_filled_with_source_port_and_received_added():
    # C08 (a): from 192.0.2.20:5060 with rport.
    stamped = stamp_received(
        via("SIP/2.0/UDP 192.0.2.20:5060;rport;branch=z9hG4bKc08a"),
        ("192.0.2.20", 5060),
    )

    assert stamped.received == "192.0.2.20"
    assert stamped.rport == 5060
    assert response_destination(stamped, reliable=False) == ("192.0.2.20", 5060)


def test_c08_without_rport_reply_to_received_on_sent_by_port():
    # C08 (b): from 192.0.2.21:40000, sent-by 192.0.2.99:5060, no rport.
    stamped = stamp_received(
        via("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKc08b"), ("192.0.2.21", 40000)
    )

    assert stamped.received == "192.0.2.21"
    assert stamped.rport is None
    assert response_destination(stamped, reliable=False) == ("192.0.2.21", 5060)


def test_c08_with_rport_reply_to_source_address_and_port():
    # C08 (c): as (b) with rport.
    stamped = stamp_received(
        via("SIP/2.0/UDP 192.0.2.99:5060;rport;branch=z9hG4bKc08c"),
        ("192.0.2.21", 40000),
    )

    assert str(stamped).endswith(";rport=40000;branch=z9hG4bKc08c;received=192.0.2.21")
    assert response_destination(stamped, reliable=False) == ("192.0.2.21", 40000)


def test_received_replaces_a_forged_one():
    stamped = stamp_received(
        via("SIP/2.0/UDP 192.0.2.99;received=203.0.113.9;branch=z9hG4bKf"),
        ("192.0.2.21", 5060),
    )

    assert stamped.received == "192.0.2.21"
    assert str(stamped).count("received=") == 1


def test_ipv6_source_stamped_without_brackets():
    stamped = stamp_received(
        via("SIP/2.0/UDP [2001:db8::9:1];rport;branch=z9hG4bK6"),
        ("2001:db8::9:255", 40000),
    )

    assert stamped.received == "2001:db8::9:255"
    assert response_destination(stamped, reliable=False) == ("2001:db8::9:255", 40000)


def test_maddr_wins_on_unreliable_transport():
    stamped = stamp_received(
        via("SIP/2.0/UDP 192.0.2.99:5070;maddr=239.255.255.1;branch=z9hG4bKm"),
        ("192.0.2.21", 40000),
    )

    assert response_destination(stamped, reliable=False) == ("239.255.255.1", 5070)


def test_reliable_reconnect_goes_to_received_on_sent_by_port():
    stamped = stamp_received(
        via("SIP/2.0/TCP client.example.com:5070;rport;branch=z9hG4bKt"),
        ("192.0.2.21", 40000),
    )

    assert response_destination(stamped, reliable=True) == ("192.0.2.21", 5070)


@pytest.mark.parametrize(
    ("transport", "port", "expected"),
    [("UDP", None, 5060), ("TLS", None, 5061), ("TCP", 5080, 5080)],
)
def test_sent_by_port_defaults_per_transport(transport, port, expected):
    hostport = "192.0.2.99" + (f":{port}" if port else "")
    parsed = via(f"SIP/2.0/{transport} {hostport};branch=z9hG4bKd")

    assert response_destination(parsed, reliable=False) == ("192.0.2.99", expected)


@pytest.mark.parametrize(
    ("size", "transport", "expected"),
    [
        (UDP_SIZE_LIMIT, "UDP", "UDP"),
        (UDP_SIZE_LIMIT + 1, "UDP", "TCP"),
        (9000, "TCP", "TCP"),
        (9000, "TLS", "TLS"),
        (200, "TCP", "TCP"),
    ],
)
def test_request_transport_follows_1300_byte_rule(size, transport, expected):
    assert request_transport(size, transport) == expected


def test_client_via_asks_for_rport():
    made = client_via("TCP", ("2001:db8::1", 5060), "z9hG4bKnew")

    assert str(made) == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKnew;rport"


def test_stamp_request_changes_only_the_top_via_value():
    data = (
        b"OPTIONS sip:sbc.example.com SIP/2.0\r\n"
        b"Max-Forwards: 70\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa ,SIP/2.0/TCP  edge.example.com;branch=z9hG4bKb\r\n"
        b"From: <sip:a@example.com>;tag=1\r\n"
        b"v: SIP/2.0/UDP 192.0.2.11;branch=z9hG4bKc\r\n"
        b"To: <sip:b@example.com>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(data)
    assert isinstance(request, Request)

    stamp_request(request, ("192.0.2.10", 5060))

    assert request.headers.values("Via") == [
        "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa;received=192.0.2.10",
        "SIP/2.0/TCP  edge.example.com;branch=z9hG4bKb",
        "SIP/2.0/UDP 192.0.2.11;branch=z9hG4bKc",
    ]
    assert len(request.headers.get_all("Via")) == 2
    assert request.top_via.received == "192.0.2.10"
