"""The Security Policy Database: selectors, ordering, defaults and the cache."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.packet import Raw

from ipsec.esp.spd import (
    DEFAULT_POLICY,
    Direction,
    PolicyAction,
    SecurityPolicyDatabase,
    TrafficSelector,
)

LOCAL = TrafficSelector.from_network("192.0.2.0/28")
SIP_TRUNK = TrafficSelector.from_network("203.0.113.0/24", protocol=17, port=5060)
ANY_V4 = TrafficSelector.from_network("0.0.0.0/0")


def selector(start: str, end: str, protocol: int = 0, ports=(0, 0xFFFF)):
    return TrafficSelector(ip_address(start), ip_address(end), protocol, *ports)


def test_lookup_first_match_wins_in_order():
    spd = SecurityPolicyDatabase()
    sip = spd.add(LOCAL, SIP_TRUNK, spi=0x1001)
    spd.add(LOCAL, ANY_V4, PolicyAction.BYPASS)

    to_trunk = spd.lookup(
        ip_address("192.0.2.5"), ip_address("203.0.113.9"), 17, 5060, 5060
    )
    to_web = spd.lookup(
        ip_address("192.0.2.5"), ip_address("203.0.113.9"), 6, 40000, 443
    )

    assert to_trunk is sip
    assert to_web.action is PolicyAction.BYPASS


def test_lookup_unmatched_traffic_discarded_by_default():
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, SIP_TRUNK, spi=0x1001)

    policy = spd.lookup(
        ip_address("192.0.2.200"), ip_address("203.0.113.9"), 17, 5060, 5060
    )

    assert policy is DEFAULT_POLICY
    assert policy.action is PolicyAction.DISCARD


def test_selector_range_not_cidr_c27():
    # C27 (b): a selector that is a range, not a block.
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, selector("192.0.2.50", "192.0.2.250"), spi=0x2002)
    source = ip_address("192.0.2.1")

    inside = [
        spd.lookup(source, ip_address(f"192.0.2.{n}"), 17) for n in (50, 128, 250)
    ]
    outside = [spd.lookup(source, ip_address(f"192.0.2.{n}"), 17) for n in (49, 251)]

    assert all(p.spi == 0x2002 for p in inside)
    assert all(p is DEFAULT_POLICY for p in outside)


def test_selector_ports_and_protocol_checked_per_end():
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, SIP_TRUNK, spi=0x1001)
    source, trunk = ip_address("192.0.2.1"), ip_address("203.0.113.1")

    assert spd.lookup(source, trunk, 17, 1234, 5060).spi == 0x1001
    assert spd.lookup(source, trunk, 17, 1234, 5061) is DEFAULT_POLICY
    assert spd.lookup(source, trunk, 6, 1234, 5060) is DEFAULT_POLICY


def test_ipv4_selector_never_matches_ipv6():
    spd = SecurityPolicyDatabase()
    spd.add(ANY_V4, ANY_V4, PolicyAction.BYPASS)

    policy = spd.lookup(ip_address("::ffff:192.0.2.1"), ip_address("::1"), 17)

    assert policy is DEFAULT_POLICY


def test_cache_emptied_when_policies_change():
    spd = SecurityPolicyDatabase()
    source, trunk = ip_address("192.0.2.1"), ip_address("203.0.113.1")
    first = spd.add(LOCAL, SIP_TRUNK, spi=0x1001)
    assert spd.lookup(source, trunk, 17, 5060, 5060) is first

    spd.remove(first)
    assert spd.lookup(source, trunk, 17, 5060, 5060) is DEFAULT_POLICY
    second = spd.add(LOCAL, SIP_TRUNK, spi=0x1002)
    assert spd.lookup(source, trunk, 17, 5060, 5060) is second
    assert spd.remove_spi(0x1002) == 1
    assert spd.lookup(source, trunk, 17, 5060, 5060) is DEFAULT_POLICY


def test_add_index_puts_policy_first():
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, ANY_V4, PolicyAction.DISCARD)
    urgent = spd.add(LOCAL, SIP_TRUNK, spi=0x1001, index=0)

    policy = spd.lookup(
        ip_address("192.0.2.1"), ip_address("203.0.113.1"), 17, 5060, 5060
    )

    assert policy is urgent
    assert list(spd)[0] is urgent


@pytest.mark.parametrize(
    "packet",
    [
        IP(src="192.0.2.3", dst="203.0.113.4")
        / UDP(sport=5060, dport=5060)
        / Raw(b"x"),
        IPv6(src="2001:db8::3", dst="2001:db8:1::4")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5060, dport=5060),
    ],
    ids=["ipv4", "ipv6-extension-headers"],
)
def test_lookup_packet_reads_addresses_and_ports(packet):
    spd = SecurityPolicyDatabase()
    spd.add(
        TrafficSelector.from_network("2001:db8::/64"),
        TrafficSelector.from_network("2001:db8:1::/64", protocol=17, port=5060),
        spi=0x6006,
    )
    spd.add(LOCAL, SIP_TRUNK, spi=0x4004)

    policy = spd.lookup_packet(bytes(packet))

    assert policy.spi == (0x4004 if packet.version == 4 else 0x6006)


def test_lookup_packet_non_port_protocol_and_garbage():
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, ANY_V4, PolicyAction.BYPASS)
    ping = IP(src="192.0.2.3", dst="198.51.100.1") / ICMP()

    assert spd.lookup_packet(bytes(ping)).action is PolicyAction.BYPASS
    assert spd.lookup_packet(b"\x00" * 10) is DEFAULT_POLICY


def test_admits_inbound_checks_arrival_sa():
    spd = SecurityPolicyDatabase()
    spd.add(LOCAL, SIP_TRUNK, spi=0x7007, direction=Direction.INBOUND)
    from_trunk = IP(src="203.0.113.8", dst="192.0.2.2") / UDP(sport=5060, dport=5060)
    spoofed = IP(src="198.51.100.8", dst="192.0.2.2") / TCP(sport=5060, dport=5060)

    assert spd.admits_inbound(0x7007, bytes(from_trunk))
    assert not spd.admits_inbound(0x7008, bytes(from_trunk))
    assert not spd.admits_inbound(0x7007, bytes(spoofed))


@pytest.mark.parametrize(
    ("start", "end", "ports"),
    [
        ("192.0.2.9", "192.0.2.1", (0, 65535)),
        ("192.0.2.1", "::1", (0, 1)),
        ("1.1.1.1", "1.1.1.2", (9, 8)),
    ],
)
def test_selector_refuses_inverted_or_mixed_ranges(start, end, ports):
    with pytest.raises(ValueError):
        selector(start, end, 0, ports)


def test_protect_policy_requires_spi():
    with pytest.raises(ValueError, match="SPI"):
        SecurityPolicyDatabase().add(LOCAL, SIP_TRUNK)


octet = st.integers(0, 255)


@settings(max_examples=200, deadline=None)
@given(
    bounds=st.lists(
        st.tuples(octet, octet, st.sampled_from([0, 6, 17]), octet, octet),
        min_size=1,
        max_size=6,
    ),
    probes=st.lists(st.tuples(octet, st.sampled_from([6, 17, 1]), octet), max_size=20),
)
def test_lookup_agrees_with_brute_force(bounds, probes):
    spd = SecurityPolicyDatabase()
    policies = []
    for index, (a, b, protocol, p, q) in enumerate(bounds):
        remote = selector(
            f"10.0.0.{min(a, b)}",
            f"10.0.0.{max(a, b)}",
            protocol,
            (min(p, q), max(p, q)),
        )
        policies.append(spd.add(ANY_V4, remote, spi=0x1000 + index))
    source = ip_address("192.0.2.1")

    for host, protocol, port in probes:
        destination = ip_address(f"10.0.0.{host}")
        expected = next(
            (
                p
                for p in policies
                if p.remote.start_address <= destination <= p.remote.end_address
                and p.remote.protocol in (0, protocol)
                and p.remote.start_port <= port <= p.remote.end_port
            ),
            DEFAULT_POLICY,
        )
        assert spd.lookup(source, destination, protocol, 0, port) is expected
