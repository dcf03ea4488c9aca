"""Parsing ``--listen`` values."""

from __future__ import annotations

import pytest

from sbc.io.settings import ListenSpec, ListenSpecError, parse_listen_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("UDP", "127.0.0.1", 5060)),
        ("TCP:0.0.0.0:0", ListenSpec("TCP", "0.0.0.0", 0)),
        ("tcp:[::1]:5070", ListenSpec("TCP", "::1", 5070)),
        ("tls:[2001:db8::1]", ListenSpec("TLS", "2001:db8::1", 5061)),
        ("udp:192.0.2.1", ListenSpec("UDP", "192.0.2.1", 5060)),
    ],
)
def test_listen_spec_parsed(text, expected):
    assert parse_listen_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:5060",
        "sctp:127.0.0.1:5060",
        "udp:::1:5060",
        "udp:[::1",
        "udp:[::1]x",
        "udp:127.0.0.1:65536",
        "udp:127.0.0.1:-1",
        "udp:localhost:5060",
        "udp:[fe80::1%eth0]:5060",
    ],
)
def test_bad_listen_spec_rejected(text):
    with pytest.raises(ListenSpecError):
        parse_listen_spec(text)


@pytest.mark.parametrize(
    "spec", [ListenSpec("UDP", "127.0.0.1", 5060), ListenSpec("TLS", "::1", 5061)]
)
def test_listen_spec_round_trips_through_text(spec):
    assert parse_listen_spec(str(spec)) == spec
